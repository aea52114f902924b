"""`research/head_study.py`: the prediction-head study across bits per token.

Fast tests (config only, milliseconds): head-width matching, the linear head's infeasibility decided from the
configuration, flag validation, the study-settings guard.

END-TO-END TESTS (real trainings through the unchanged training scripts, ~1-2 min together on 2 cores): `--quick`
writes the table with all three heads and an infeasible linear cell; a study killed inside a generator's training
(right after checkpoint-10 of the `k4-bitwise` cell, injected by `tests/kill_after.py`) skips its finished cells on
rerun and resumes the
unfinished one from its checkpoint to the same weights and metrics as an uninterrupted study. They run on a small
Fashion-MNIST folder (the first 1,000 / 200 real images when Debian's dataset-fashion-mnist is installed, random
images otherwise, so they never skip).
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
from example_scripts import load_script, one_thread_env, run_killed, script_path
from safetensors.torch import load_file

from bar_hf.training.data import DEBIAN_FASHION_MNIST_DIR

head_study = load_script("head_study")  # puts research/ on sys.path, as running the script does
from head_study_heads import linear_feasibility, plan_heads  # noqa: E402


def default_args(**overrides) -> Namespace:
    args = head_study.parse_args(["--study_dir", "unused"])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


# ------------------------------------------------------------------------------------------------ fast tests
def test_linear_head_infeasible_from_config_above_limits():
    args = default_args()
    plan = plan_heads(args, 24)
    assert plan["linear"]["feasible"] is False
    assert "--max_linear_params" in plan["linear"]["infeasible_reason"]
    assert "--max_logits_mib" in plan["linear"]["infeasible_reason"]
    assert plan["linear"]["head_params"] == (16 + 1) * 2**24  # analytic: nothing was built
    assert plan["mbm"]["feasible"] and plan["bitwise"]["feasible"]
    # the limits are flags: the same head becomes feasible / infeasible with them
    assert linear_feasibility(default_args(max_linear_params=10**9, max_logits_mib=10**6), 24, 16)[0]
    assert not linear_feasibility(default_args(max_linear_params=100), 4, 16)[0]


def test_head_widths_match_parameter_counts_where_possible():
    args = default_args()
    for bits in (4, 8, 12):
        plan = plan_heads(args, bits)
        for head in ("bitwise", "linear"):
            ratio = plan[head]["head_params"] / plan["mbm"]["head_params"]
            assert 0.85 < ratio < 1.15, (bits, head, ratio)
    # 2^16 ids: 1 GiB of training logits is over the default limit; above it even the smallest linear head is more
    # than twice the MBM head (reported, not matched)
    assert "training logits 1,024 MiB > --max_logits_mib 512" in plan_heads(args, 16)["linear"]["infeasible_reason"]
    plan = plan_heads(default_args(max_logits_mib=2048), 16)
    assert plan["linear"]["feasible"] and plan["linear"]["head_params"] > 2 * plan["mbm"]["head_params"]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--sweep", "[[1.5]]"], "--sweep"),
        (["--sweep", "[]"], "--sweep"),
        (["--sweep", "[[2.0, -1]]"], "--sweep"),
        (["--bits", "0"], "--bits"),
        (["--bits", "8", "64"], "--bits"),
        (["--generator_steps", "0"], "generator_steps"),
        (["--tokenizer_patch_size", "5"], "--tokenizer_patch_size"),
        (["--tokenizer_ema_decay", "1.5"], "--tokenizer_ema_decay"),
    ],
)
def test_bad_flags_raise_value_error(argv, match):
    with pytest.raises(ValueError, match=match):
        head_study.parse_args(["--study_dir", "unused", *argv])


def test_study_dir_refuses_other_settings(tmp_path):
    head_study.check_study_settings(default_args(), tmp_path)
    head_study.check_study_settings(default_args(bits=[4]), tmp_path)  # bits only select cells
    with pytest.raises(ValueError, match="generator_steps"):
        head_study.check_study_settings(default_args(generator_steps=7), tmp_path)


# ------------------------------------------------------------------------------------------------ end to end
def _write_idx(path: Path, array: np.ndarray) -> None:
    header = (0x0800 | array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def fmnist_dir(tmp_path_factory) -> Path:
    """A small Fashion-MNIST folder: real images when installed, random ones otherwise."""
    from bar_hf.training.data import read_fashion_mnist

    root = tmp_path_factory.mktemp("fmnist")
    rng = np.random.default_rng(0)
    for split, prefix, n in (("train", "train", 1000), ("test", "t10k", 200)):
        if Path(DEBIAN_FASHION_MNIST_DIR, f"{prefix}-images-idx3-ubyte.gz").exists():
            images, labels = read_fashion_mnist(split, DEBIAN_FASHION_MNIST_DIR)
            images, labels = images[:n], labels[:n]
        else:
            images, labels = rng.integers(0, 256, (n, 28, 28)), np.arange(n) % 10
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def study_args(study_dir: Path, fmnist: Path, *extra: str) -> list[str]:
    return ["--study_dir", str(study_dir), "--quick", "--fashion_mnist_dir", str(fmnist), *extra]


def run_study(study_dir: Path, fmnist: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(script_path("head_study")), *study_args(study_dir, fmnist, *extra)]
    return subprocess.run(command, capture_output=True, text=True, env=one_thread_env(), timeout=600)


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory, fmnist_dir) -> Path:
    """An uninterrupted `--quick` study (bits 4 and 8, the three heads)."""
    study = tmp_path_factory.mktemp("quick")
    result = run_study(study, fmnist_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return study


@pytest.mark.slow
def test_quick_writes_table_with_three_heads_and_infeasible_linear(quick_study):
    report = (quick_study / "head_study.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| 4 |") or line.startswith("| 8 |")]
    generator_rows = [r for r in rows if any(f"| {h} |" in r for h in ("mbm", "bitwise", "linear"))]
    assert len(generator_rows) == 6
    for head in ("mbm", "bitwise", "linear"):
        assert any(f"| 4 | {head} |" in r and "infeasible" not in r for r in generator_rows), head
    (infeasible,) = [r for r in generator_rows if "infeasible" in r]
    assert "| 8 | linear |" in infeasible and "--max_linear_params 2,048" in infeasible
    assert (quick_study / "head_study.png").stat().st_size > 1000
    k4 = json.loads((quick_study / "results" / "k4-mbm.json").read_text())
    assert k4["train"]["steps_timed"] == 20 and k4["train"]["peak_rss_mib"] > 0
    assert {"gen_fid", "precision", "recall", "class_accuracy", "sampling_seconds_per_image"} <= k4.keys()
    assert (quick_study / "generators" / "k4-mbm" / "samples.png").is_file()
    assert not (quick_study / "generators" / "k8-linear").exists()  # infeasible: never built
    tokenizer = json.loads((quick_study / "results" / "tokenizer-k8.json").read_text())
    assert tokenizer["psnr_db"] > 0 and tokenizer["rfid"] is not None


@pytest.mark.slow
def test_killed_study_resumes_to_the_uninterrupted_result(tmp_path, quick_study, fmnist_dir):
    study = tmp_path / "killed"
    argv = study_args(study, fmnist_dir, "--bits", "4", "--heads", "mbm", "bitwise")
    killed = run_killed("checkpoint", 10, "head_study", argv, only_output_name="k4-bitwise")
    assert killed.returncode == -9, killed.stderr[-3000:]
    results = study / "results"
    finished = {name: (results / name).stat().st_mtime_ns for name in ("tokenizer-k4.json", "k4-mbm.json")}
    assert not (results / "k4-bitwise.json").exists()
    assert (study / "generators" / "k4-bitwise" / "checkpoint-10").is_dir()

    resumed = run_study(study, fmnist_dir, "--bits", "4", "--heads", "mbm", "bitwise")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "tokenizer-k4: finished earlier, skipped" in resumed.stdout
    assert "k4-mbm: finished earlier, skipped" in resumed.stdout
    assert {name: (results / name).stat().st_mtime_ns for name in finished} == finished
    cell = json.loads((results / "k4-bitwise.json").read_text())
    assert cell["train"]["steps_timed"] == 10  # steps 11..20 only: resumed from checkpoint-10
    reference = json.loads((quick_study / "results" / "k4-bitwise.json").read_text())
    for key in ("gen_fid", "precision", "recall", "class_accuracy", "best_setting", "sweep", "head_params"):
        assert cell[key] == reference[key], key
    weights = "generators/k4-bitwise/pipeline/transformer/model.safetensors"
    ours, theirs = load_file(study / weights), load_file(quick_study / weights)
    assert ours.keys() == theirs.keys()
    assert all((ours[k] == theirs[k]).all() for k in ours)
