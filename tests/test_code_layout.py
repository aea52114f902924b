"""The package's shape stays readable: subpackages by job, small modules and functions, no private name crossing a
module, nothing cited that is not in the repository, examples that import the installed package."""

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "bar_hf"
MODULES = sorted(SRC.rglob("*.py"))


def _tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / line for line in out.stdout.splitlines() if (ROOT / line).is_file()]


def test_subpackages_by_job():
    for name in ("models", "schedulers", "pipelines", "conversion", "evaluation", "training"):
        assert (SRC / name / "__init__.py").is_file(), name


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_modules_and_functions_are_small(path):
    source = path.read_text(encoding="utf-8")
    assert source.count("\n") <= 600, f"{path.name}: {source.count(chr(10))} lines (max 600)"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name != "__call__":
            length = node.end_lineno - node.lineno + 1
            assert length <= 80, f"{path.name}:{node.lineno} {node.name} has {length} lines (max 80)"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_private_name_is_imported_across_modules(path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("bar_hf")):
            private = [a.name for a in node.names if a.name.startswith("_") and not a.name.endswith("__")]
            assert not private, f"{path.name} imports private {private} from {node.module}"


def test_nothing_outside_the_repository_is_cited():
    pattern = re.compile("BAR_" + "METHOD|HF_" + "CONVENTIONS|\\.\\./shared")
    offenders = [
        str(p.relative_to(ROOT))
        for p in _tracked()
        if p.suffix in {".py", ".md", ".sh", ".toml", ".cfg", ".txt"} and pattern.search(p.read_text(errors="ignore"))
    ]
    assert not offenders
    assert (ROOT / "docs" / "method.md").is_file()


def test_examples_do_not_edit_sys_path():
    edit = re.compile(r"sys\.path\.(insert|append|extend)|sys\.path\s*(\+?=|\[)")
    scripts = [p for p in _tracked("examples", "research") if p.suffix == ".py"]
    assert scripts and not [str(p.relative_to(ROOT)) for p in scripts if edit.search(p.read_text())]
