"""`research/inpaint_eval.py --quick`: every mask × order × class setting on a tiny random model, report files."""

import json

import torch
from example_scripts import load_script
from PIL import Image


def load_eval():
    return load_script("inpaint_eval")


def test_quick_inpaint_eval_writes_report(tmp_path):
    evaluation = load_eval()
    args = evaluation.parse_args(
        ["--quick", "--output_dir", str(tmp_path), "--num_images", "4", "--batch_size", "2", "--num_reference", "8",
         "--timing_images", "2", "--grid_images", "2"]
    )  # fmt: skip
    report = evaluation.main(args)
    settings = report["settings"]
    assert [(r["mask"], r["order"], r["labels"].split()[0]) for r in settings[:4]] == [
        ("center", "kept_first", "true"), ("center", "kept_first", "swapped"),
        ("center", "raster", "true"), ("center", "raster", "swapped"),
    ]  # fmt: skip
    assert len(settings) == 3 * 2 * 2
    for r in settings:
        assert r["psnr_kept_paste_back"] == "inf"  # pasted back: the kept region is exact
        assert isinstance(r["psnr_kept_no_paste_back"], float) and r["fid"] >= 0
        assert 0 <= r["class_accuracy"] <= 1 and 0 < r["regenerated_token_fraction"] < 1
    assert set(report["timing"]["seconds_per_image"]) == {"plain_generation"} | {
        f"{m}/{o}" for m in ("center", "bottom_half", "random_box") for o in ("kept_first", "raster")
    }
    assert json.loads((tmp_path / "results.json").read_text())["default_order"] == "raster"
    assert "| center | kept_first | true |" in (tmp_path / "results.md").read_text()
    grid = Image.open(tmp_path / "grid.png")
    assert grid.height == 2 * (64 + 2)  # two image rows of 16 px cells upscaled x4


def test_psnr_and_random_box_masks():
    evaluation = load_eval()
    a = torch.zeros(1, 1, 4, 4)
    b = a.clone()
    b[..., 0, 0] = 0.1
    everywhere = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    assert evaluation.psnr(a, a, everywhere) == "inf"
    assert abs(evaluation.psnr(a, b, everywhere) - 10 * torch.log10(torch.tensor(16 / 0.01)).item()) < 1e-4
    args = evaluation.parse_args(["--output_dir", "x", "--seed", "3"])
    boxes = evaluation.masks_for("random_box", args, 16, 3)
    assert boxes.shape == (3, 16, 16) and not torch.equal(boxes[0], boxes[1])  # seeded per image
    assert torch.equal(boxes, evaluation.masks_for("random_box", args, 16, 3))


def test_quick_eval_subset_without_fid(tmp_path):
    evaluation = load_eval()
    args = evaluation.parse_args(
        ["--quick", "--output_dir", str(tmp_path), "--num_images", "2", "--masks", "bottom_half", "--orders", "raster",
         "--fid_images", "0", "--timing_images", "0", "--grid_images", "1"]
    )  # fmt: skip
    report = evaluation.main(args)
    assert [(r["mask"], r["order"], r["fid"]) for r in report["settings"]] == [("bottom_half", "raster", None)] * 2
    assert report["timing"] == {} and not list(tmp_path.glob("reference_*.npz"))
