"""`examples/evaluate_tokenizer.py`: PSNR / rFID / token usage of a tokenizer on (fake) Fashion-MNIST test files."""

import json
import math

import numpy as np
from test_examples import load_script, trained_vq, workdir  # noqa: F401
from test_training_reliability import write_idx

evaluate_tokenizer = load_script("evaluate_tokenizer")


def test_reconstruction_metrics_on_fake_test_files(tmp_path, trained_vq):  # noqa: F811
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (6, 28, 28)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(6))
    out = tmp_path / "rec.json"
    argv = ["--vqvae", str(trained_vq), "--output", str(out), "--num_images", "6", "--batch_size", "4",
            "--fashion_mnist_dir", str(tmp_path), "--reference_stats_cache", str(tmp_path / "ref.npz")]  # fmt: skip
    result = evaluate_tokenizer.main(evaluate_tokenizer.parse_args(argv))
    assert json.loads(out.read_text()) == result
    assert result["num_images"] == 6 and (tmp_path / "ref.npz").is_file()
    assert math.isclose(result["psnr_db"], 10 * math.log10(4 / result["mse"]))
    assert 1 <= result["tokens_used"] <= 6 * 64 and math.isfinite(result["rfid"])
