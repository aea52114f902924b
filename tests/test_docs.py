"""The docs stay true: documented defaults match the code, and the runnable examples run.

Conventions for everyone editing `docs/`:

* A markdown table directly after ``<!-- signature-table: bar_hf.Some.callable -->`` documents **every** argument of
  that callable, in signature order, with the columns ``argument``, ``type`` and ``default``. Argument, type and
  default cells are code spans (``| `num_bits` | `int` | `16` |``; write ``\\|`` for a ``|`` inside a type); an
  argument without a default is documented as ``*required*``. The default must equal the code's default (same
  Python type and value) and the type must equal the annotation.
* ```` ```py ```` blocks in `docs/index.md` and `docs/api/*.md` are executed in order, one namespace per page (later
  blocks may use names from earlier ones), in a temporary working directory. Blocks that need the bundled model or
  the Hub are skipped; mark illustrative snippets as ```` ```python ```` instead. Keep runnable examples tiny.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest
import torch

from bar_hf import BAR_PRESETS, BAR_SAMPLING_DEFAULTS, BARConfig, BARForCausalImageModeling

DOCS = Path(__file__).resolve().parents[1] / "docs"
MARKER = re.compile(r"<!--\s*signature-table:\s*([\w.]+)\s*-->")
REQUIRED_TABLES = {
    "api/vq_model.md": "bar_hf.BARVQModel.__init__",
    "api/modeling.md": "bar_hf.BARConfig.__init__",
    "api/scheduler.md": "bar_hf.BARBitScheduler.__init__",
}
RUNNABLE_PAGES = ["index.md", *sorted(str(p.relative_to(DOCS)) for p in (DOCS / "api").glob("*.md"))]
# examples that need weights from outside the repository are not run
NEEDS_EXTERNAL = re.compile(r"bundled_model_path|from_pretrained\(\s*[\"'][\w.-]+/[\w.-]+[\"']")


# ---------------------------------------------------------------------------------------------------- parsing
def _read(page: str) -> str:
    return (DOCS / page).read_text(encoding="utf-8")


def _split_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [cell.strip().replace("\\|", "|") for cell in cells]


def _table_after(text: str, position: int) -> list[dict[str, str]]:
    """Rows (dicts keyed by lower-cased header) of the first markdown table after `position`."""
    lines = text[position:].splitlines()[1:]
    while lines and not lines[0].strip():
        lines.pop(0)
    table = []
    for line in lines:
        if not line.strip().startswith("|"):
            break
        table.append(line)
    assert len(table) >= 3, f"no markdown table follows the marker at offset {position}"
    header = [h.lower() for h in _split_row(table[0])]
    return [dict(zip(header, _split_row(line), strict=True)) for line in table[2:]]


def _code(cell: str, what: str) -> str:
    match = re.fullmatch(r"`([^`]*)`", cell)
    assert match, f"{what}: expected a code span like `value`, got {cell!r}"
    return match.group(1)


def _signature_tables() -> list[tuple[str, str, int]]:
    found = []
    for path in sorted(DOCS.rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        for match in MARKER.finditer(text):
            found.append((str(path.relative_to(DOCS)), match.group(1), match.start()))
    return found


def _resolve(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def _annotation(param: inspect.Parameter) -> str:
    annotation = param.annotation
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------------- defaults
def test_required_signature_tables_exist():
    documented = {(page, target) for page, target, _ in _signature_tables()}
    for page, target in REQUIRED_TABLES.items():
        assert (page, target) in documented, f"docs/{page} must document {target} in a signature table"


@pytest.mark.parametrize(
    ("page", "target", "position"),
    _signature_tables(),
    ids=[f"{page}:{target}" for page, target, _ in _signature_tables()],
)
def test_signature_table_matches_code(page, target, position):
    rows = _table_after(_read(page), position)
    params = [
        p
        for name, p in inspect.signature(_resolve(target)).parameters.items()
        if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    documented = [_code(row["argument"], f"docs/{page} {target}") for row in rows]
    names = [p.name for p in params]
    assert documented == names, (
        f"docs/{page}: arguments of {target} must be documented in signature order; undocumented: "
        f"{sorted(set(names) - set(documented))}, not in the code: {sorted(set(documented) - set(names))}"
    )
    for row, param in zip(rows, params, strict=True):
        where = f"docs/{page}: {target}({param.name})"
        assert " ".join(_code(row["type"], where).split()) == _annotation(param), f"{where}: documented type"
        if param.default is inspect.Parameter.empty:
            assert row["default"] == "*required*", f"{where} has no default; document it as *required*"
            continue
        value = ast.literal_eval(_code(row["default"], where))
        assert type(value) is type(param.default) and value == param.default, (
            f"{where}: documented default {value!r}, code default {param.default!r}"
        )


def test_presets_table_matches_code():
    text = _read("api/modeling.md")
    rows = _table_after(text, text.index("<!-- presets-table -->"))
    assert [_code(row["preset"], "preset") for row in rows] == list(BAR_PRESETS)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    number = lambda cell: ast.literal_eval(cell.replace(",", "_"))  # noqa: E731
    for row in rows:
        name = _code(row["preset"], "preset")
        config = BARConfig.from_preset(name)
        actual = {
            "d": config.hidden_size,
            "depth": config.num_hidden_layers,
            "heads": config.num_attention_heads,
            "swiglu hidden": config.intermediate_size,
            "p": config.patch_size,
            "n": config.num_ar_steps,
            "k": config.bits_per_token,
            "dropout": config.hidden_dropout,
        }
        for column, value in actual.items():
            assert number(row[column]) == value, f"docs/api/modeling.md presets: {name} {column}"
        with torch.device("meta"):
            model = BARForCausalImageModeling(config)
        assert number(row["parameters"]) == count(model), f"{name}: parameter count"
        assert number(row["head parameters"]) == count(model.head), f"{name}: head parameter count"


def test_sampling_defaults_table_matches_code():
    text = _read("api/modeling.md")
    rows = _table_after(text, text.index("<!-- sampling-defaults-table -->"))
    documented = {
        _code(row["preset"], "preset"): {
            key: ast.literal_eval(row[f"`{key}`"].strip("`"))
            for key in ("guidance_scale", "temperature", "tokens_allocation")
        }
        for row in rows
    }
    assert documented == BAR_SAMPLING_DEFAULTS


# ---------------------------------------------------------------------------------------------------- examples
def _runnable_blocks(page: str) -> list[tuple[int, str]]:
    text = _read(page)
    blocks = []
    for match in re.finditer(r"^```py[ \t]*\n(.*?)^```[ \t]*$", text, flags=re.S | re.M):
        line = text[: match.start()].count("\n") + 1
        blocks.append((line, match.group(1)))
    return blocks


@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_runnable_examples(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    blocks = [(line, code) for line, code in _runnable_blocks(page) if not NEEDS_EXTERNAL.search(code)]
    assert blocks, f"docs/{page} has no runnable ```py example"
    namespace = {"__name__": f"docs_{Path(page).stem}"}
    for line, code in blocks:
        try:
            # padded so that tracebacks show the line numbers of the markdown file
            exec(compile("\n" * line + code, f"docs/{page}", "exec"), namespace)  # noqa: S102
        except Exception as error:
            raise AssertionError(f"the ```py example at docs/{page} line {line} failed: {error!r}") from error
