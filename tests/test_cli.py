"""`bar-hf` end to end on a tiny saved pipeline (and the bundled model when it is installed)."""

import subprocess
import sys

import pytest
from PIL import Image
from test_pipeline_bar import make_pipe

from bar_hf import cli


@pytest.fixture(scope="module")
def saved_pipe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli") / "pipe"
    make_pipe().save_pretrained(folder)
    return folder


def test_generate_grid_and_files(saved_pipe, tmp_path):
    grid = tmp_path / "grid.png"
    code = cli.main(
        ["generate", "--model", str(saved_pipe), "--class-labels", "1", "three", "--num-images-per-label", "3",
         "--seed", "5", "--guidance-scale", "2", "--num-inference-steps", "2", "--output", str(grid),
         "--output-dir", str(tmp_path / "images"), "--quiet", "--scale", "2"]
    )  # fmt: skip
    assert code == 0
    image = Image.open(grid)
    assert image.height == 2 * (48 + 2)  # two labelled rows of 24 px images upscaled x2
    files = sorted((tmp_path / "images").iterdir())
    assert [f.name for f in files][:2] == ["00000_class1_seed5.png", "00001_class1_seed6.png"]
    assert len(files) == 6


def test_generate_matches_pipeline_seeds(saved_pipe, tmp_path):
    import numpy as np
    import torch

    from bar_hf import BARPipeline

    cli.main(["generate", "--model", str(saved_pipe), "--class-labels", "3", "--num-images-per-label", "2",
              "--seed", "7", "--output-dir", str(tmp_path), "--quiet"])  # fmt: skip
    pipe = BARPipeline.from_pretrained(saved_pipe)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe([3, 3], generator=[torch.Generator().manual_seed(7 + i) for i in range(2)], output_type="np")
    written = np.asarray(Image.open(tmp_path / "00001_class3_seed8.png"), dtype=np.float32) / 255
    assert np.abs(written - expected.images[1]).max() <= 1 / 255 + 1e-6


def test_generate_bad_label_is_a_clear_error(saved_pipe, tmp_path, capsys):
    code = cli.main(["generate", "--model", str(saved_pipe), "--class-labels", "unicorn", "--output",
                     str(tmp_path / "x.png"), "--quiet"])  # fmt: skip
    assert code == 2
    assert "unicorn" in capsys.readouterr().err


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "bar_hf.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("generate", "demo", "convert"):
        assert command in result.stdout
