"""`research/scheduler_sweep.py --quick`: the whole sweep on a tiny random model in seconds, resumable."""

import json

import numpy as np
import pytest
from example_scripts import load_script
from PIL import Image


def load_sweep():
    return load_script("scheduler_sweep")  # registered in sys.modules: dataclasses resolve their module there


QUICK = ["--quick", "--num_images", "6", "--batch_size", "3", "--num_reference", "12", "--calibration_images", "3"]
QUICK += ["--timing_rounds", "1", "--timing_batch", "2", "--grid_images", "4"]


def test_quick_sweep_writes_report_and_resumes(tmp_path):
    sweep = load_sweep()
    names = ["uniform-S1", "uniform-S2", "uniform-S4", "cosine-S2", "adaptive-S~2", "logprob-S4"]
    args = sweep.parse_args(QUICK + ["--output_dir", str(tmp_path), "--settings", *names])
    report = sweep.main(args)
    results = {r["setting"]["name"]: r for r in report["results"]}
    assert sorted(results) == sorted(names)
    num_tokens = 16  # the tiny model: 4x4 tokens of k = 4 bits
    for steps in (1, 2, 4):
        r = results[f"uniform-S{steps}"]
        assert r["head_calls_per_image"] == r["head_calls_per_image_in_batch"] == steps * num_tokens
        assert r["fid"] >= 0 and 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1
    assert results["cosine-S2"]["tokens_allocation"] == [1, 3]
    adaptive = results["adaptive-S~2"]
    assert adaptive["scheduler_config"]["confidence_threshold"] == adaptive["setting"]["confidence_threshold"]
    assert (
        num_tokens <= adaptive["head_calls_per_image"] <= adaptive["head_calls_per_image_in_batch"] <= 4 * num_tokens
    )
    calibration = json.loads((tmp_path / "calibration.json").read_text())
    assert list(calibration.values()) == sorted(calibration.values())  # more calls at higher thresholds
    assert set(report["timing"]) == set(names)
    assert all(t["images_per_s_median"] > 0 for t in report["timing"].values())
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["settings"]) == len(names)
    table = (tmp_path / "results.md").read_text()
    assert table.count("\n") == len(names) + 2 and "adaptive-S~2" in table
    for png in ("quality_vs_head_calls.png", "grid_seeds_by_steps.png"):
        assert Image.open(tmp_path / png).size[0] > 100
    grid = np.load(tmp_path / "settings" / "uniform-S2.npy")
    assert grid.shape == (4, 16, 16, 3) and grid.dtype == np.uint8

    # resumable: finished settings are read back, not recomputed
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "settings").glob("*.json")}
    again = sweep.main(args)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "settings").glob("*.json")} == stamps
    assert [r["fid"] for r in again["results"]] == [r["fid"] for r in report["results"]]


def test_unknown_setting_is_an_error(tmp_path):
    sweep = load_sweep()
    with pytest.raises(ValueError, match="unknown names"):
        sweep.main(sweep.parse_args(QUICK + ["--output_dir", str(tmp_path), "--settings", "uniform-S99"]))
