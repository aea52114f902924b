"""Where the example and research scripts live, and how tests load them in-process.

`load_script(name)` imports a script from its file as `python <script>` would run it: its own folder goes first on
`sys.path`, so the sibling modules it imports (e.g. `evaluate_bar.py` → `sample_bar.py`) resolve; the module is
registered under its name (dataclasses look their module up in `sys.modules`).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
RESEARCH = ROOT / "research"

SCRIPTS = {
    "train_bar_vq": EXAMPLES / "tokenizer" / "train_bar_vq.py",
    "evaluate_tokenizer": EXAMPLES / "tokenizer" / "evaluate_tokenizer.py",
    "pretokenize": EXAMPLES / "generator" / "pretokenize.py",
    "train_bar": EXAMPLES / "generator" / "train_bar.py",
    "sample_bar": EXAMPLES / "sampling" / "sample_bar.py",
    "evaluate_bar": EXAMPLES / "sampling" / "evaluate_bar.py",
    "fashion_mnist_classifier": EXAMPLES / "fashion_mnist" / "fashion_mnist_classifier.py",
    "head_study": RESEARCH / "head_study.py",
    "scheduler_sweep": RESEARCH / "scheduler_sweep.py",
    "inpaint_eval": RESEARCH / "inpaint_eval.py",
    "validate_metric_fashion_mnist": RESEARCH / "validate_metric_fashion_mnist.py",
}
#: The launcher that runs a script with a SIGKILL injected at a chosen step (see its docstring).
KILL_AFTER = Path(__file__).resolve().parent / "kill_after.py"


def script_path(name: str) -> Path:
    return SCRIPTS[name]


def load_script(name: str):
    path = SCRIPTS[name]
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def one_thread_env(env: dict | None = None) -> dict:
    """The environment of a script subprocess: one OpenMP thread (exact resume is promised bitwise with one thread,
    docs/guides/training.md)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}


def run_killed(point: str, step: int, name: str, args, only_output_name: str | None = None, timeout: int = 600):
    """Run script `name` with `args` through `kill_after.py`, SIGKILLed at `point` of `step`."""
    command = [sys.executable, str(KILL_AFTER)]
    if only_output_name is not None:
        command += ["--only-output-name", only_output_name]
    command += [point, str(step), str(SCRIPTS[name]), *[str(a) for a in args]]
    return subprocess.run(command, env=one_thread_env(), capture_output=True, text=True, timeout=timeout)
