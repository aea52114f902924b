"""The shell commands written in the docs use flags their scripts have, and every script's `--help` shows defaults.

Commands are read from README.md, docs/**/*.md, examples/**/README.md, research/README.md (fenced ```bash / ```sh
blocks and inline code spans) and the recipe scripts examples/**/*.sh. A command counts when it runs a repository
script (`examples/…`, `research/…`, `benchmarks/…`, `scripts/…` `.py` files, directly or through `python`,
`accelerate launch`, `torchrun`, `nohup`, environment assignments …) or the `bar-hf` CLI. Each `--flag` after the
script must be an option of that script's argparse parser (taken from the script itself: its parser is captured when
its `parse_args` runs), so a renamed or removed flag fails here; a command naming a script that does not exist fails
too. Placeholders (`<folder>`, `...`, `$VAR`, `"$@"`) are ignored.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT_ROOTS = ("examples/", "research/", "benchmarks/", "scripts/")
#: Scripts whose command line is shared with another script's parser: `evaluate_bar.py` passes the flags it does not
#: know to `sample_bar.py`.
EXTRA_PARSERS = {"examples/sampling/evaluate_bar.py": ["examples/sampling/sample_bar.py"]}
#: Example and research scripts (each must show its defaults in `--help`).
EXAMPLE_SCRIPTS = sorted(
    str(p.relative_to(ROOT))
    for folder in ("examples", "research")
    for p in (ROOT / folder).rglob("*.py")
    if "def parse_args" in p.read_text() or "def build_parser" in p.read_text()
)


def doc_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    files += sorted((ROOT / "examples").rglob("README.md")) + [ROOT / "research" / "README.md"]
    return [f for f in files if f.is_file()]


def recipe_files() -> list[Path]:
    return sorted((ROOT / "examples").rglob("*.sh"))


FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh"}


def _lines_of(shell_text: str) -> list[str]:
    """Logical lines: backslash continuations joined, `$ ` prompts dropped."""
    text = shell_text.replace("\\\n", " ")
    return [line.strip().removeprefix("$ ") for line in text.splitlines() if line.strip()]


def commands_in(path: Path) -> list[tuple[str, int, str]]:
    """`(file, line, command text)` of every candidate command in a markdown page or a shell recipe."""
    text = path.read_text()
    name = str(path.relative_to(ROOT))
    if path.suffix == ".sh":
        return [(name, 0, line) for line in _lines_of(text) if not line.startswith("#")]
    found = []
    for match in FENCE.finditer(text):
        if match.group(1).lower() in SHELL_LANGUAGES:
            line = text[: match.start()].count("\n") + 2
            found += [(name, line, command) for command in _lines_of(match.group(2)) if not command.startswith("#")]
    prose = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    for match in re.finditer(r"(?<!`)`([^`]+)`(?!`)", prose):
        span = " ".join(match.group(1).split())
        words = span.split(" ")
        if re.search(r"(^|\s)(python3?|bar-hf|accelerate launch)\s", span) or (
            words[0].endswith(".py") and len(words) > 1  # `script.py --flag …`; a bare path is a mention
        ):
            found.append((name, prose[: match.start()].count("\n") + 1, span))
    return found


def _tokens(command: str) -> list[list[str]]:
    """The command's simple commands (split at `|`, `&&`, `;`, redirections …), each as a token list."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes in prose: not a command
        return []
    segments, current = [], []
    for token in tokens:
        if token and all(c in "();<>|&" for c in token):
            segments.append(current)
            current = []
        else:
            current.append(token)
    return [s for s in segments + [current] if s]


def invocations(command: str) -> list[tuple[str, list[str]]]:
    """`(script or "bar-hf", arguments)` for each simple command that runs a repository script or the CLI."""
    found = []
    for tokens in _tokens(command):
        for index, token in enumerate(tokens):
            token = token.removeprefix("./")
            if token == "bar-hf":
                if tokens[index + 1 : index + 2] and tokens[index + 1].endswith(":"):
                    break  # an error message quoted in prose (`bar-hf generate: error: …`), not a command
                found.append(("bar-hf", tokens[index + 1 :]))
                break
            if token.endswith(".py") and token.startswith(SCRIPT_ROOTS):
                found.append((token, tokens[index + 1 :]))
                break
    return found


class _Captured(Exception):
    def __init__(self, parser):
        self.parser = parser


@cache
def script_parser(script: str) -> argparse.ArgumentParser:
    """The parser a script builds, captured when its `parse_args` (or `main`) parses (nothing else of it runs)."""
    if script == "bar-hf":
        from bar_hf.cli import build_parser

        return build_parser()
    path = ROOT / script
    folder = str(path.parent)
    if folder not in sys.path:  # as `python <script>` does: the script's siblings are importable
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    original = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args
    argparse.ArgumentParser.parse_args = argparse.ArgumentParser.parse_known_args = capture
    try:
        entry = getattr(module, "build_parser", None)
        if entry is not None:
            return entry()
        entry = getattr(module, "parse_args", None) or module.main
        entry([]) if entry.__code__.co_argcount else entry()
    except _Captured as captured:
        return captured.parser
    finally:
        argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args = original
    raise AssertionError(f"{script} built no argparse parser")


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return set(parser._option_string_actions)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def unknown_flags(script: str, arguments: list[str]) -> list[str]:
    parser = script_parser(script)
    options = _options(parser)
    for extra in EXTRA_PARSERS.get(script, []):
        options |= _options(script_parser(extra))
    subcommands = _subparsers(parser)
    if subcommands:
        command = next((a for a in arguments if not a.startswith("-")), None)
        if command is None or command not in subcommands:
            return [f"<subcommand {command!r}>"]
        options |= _options(subcommands[command])
    flags = [a.split("=", 1)[0] for a in arguments if re.match(r"^--?[A-Za-z]", a)]
    return [flag for flag in flags if flag not in options]


ALL_COMMANDS = [c for path in doc_files() + recipe_files() for c in commands_in(path)]
INVOCATIONS = [
    pytest.param(script, arguments, id=f"{name}:{line}:{Path(script).name}")
    for name, line, command in ALL_COMMANDS
    for script, arguments in invocations(command)
]


def test_commands_were_found():
    scripts = {script for param in INVOCATIONS for script in param.values[:1]}
    # the docs run these; if none is found the parsing above is broken, not the docs
    for expected in ("bar-hf", "examples/tokenizer/train_bar_vq.py", "examples/generator/train_bar.py",
                     "examples/sampling/evaluate_bar.py", "research/head_study.py",
                     "benchmarks/benchmark_sampling.py"):  # fmt: skip
        assert expected in scripts, expected


@pytest.mark.parametrize("script, arguments", INVOCATIONS)
def test_documented_command_uses_existing_flags(script, arguments):
    if script != "bar-hf":
        assert (ROOT / script).is_file(), f"the docs run {script}, which does not exist"
    unknown = unknown_flags(script, arguments)
    assert not unknown, f"{script} has no {unknown} (documented: {shlex.join(arguments)})"


def test_a_renamed_flag_is_caught():
    (_, arguments), = invocations("python examples/generator/train_bar.py --output_dir o --max_steps 3")
    assert unknown_flags("examples/generator/train_bar.py", arguments) == ["--max_steps"]
    (script, arguments), = invocations("OMP_NUM_THREADS=2 nohup python research/head_study.py --study_dir x > l &")
    assert script == "research/head_study.py" and arguments == ["--study_dir", "x"]
    (script, arguments), = invocations("bar-hf demo --output outputs/demo.png --no-such-flag")
    assert unknown_flags(script, arguments) == ["--no-such-flag"]


@pytest.mark.parametrize("script", EXAMPLE_SCRIPTS)
def test_help_shows_defaults(script):
    parser = script_parser(script)
    assert issubclass(parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter), script
    text = "".join(parser.format_help().split())  # no whitespace: long values may be wrapped anywhere
    shown = [
        action
        for action in parser._actions
        if action.option_strings and action.help not in (None, argparse.SUPPRESS) and action.help.strip()
        and action.default is not argparse.SUPPRESS
    ]
    assert text.count("(default:") >= len(shown), script
    for action in shown:
        assert "".join(f"(default: {action.default})".split()) in text, (script, action.option_strings)
