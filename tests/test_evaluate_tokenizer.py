"""`examples/tokenizer/evaluate_tokenizer.py`: PSNR / rFID / token usage of a tokenizer on (fake) Fashion-MNIST test files."""

import json
import math

import numpy as np
from example_scripts import load_script
from test_examples import trained_vq, workdir  # noqa: F401
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
    assert "classifier_accuracy" not in result


def test_classifier_metrics_with_the_fashion_mnist_classifier(tmp_path, trained_vq):  # noqa: F811
    rng = np.random.default_rng(1)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (5, 28, 28)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([0, 3, 3, 9, 1]))
    argv = ["--vqvae", str(trained_vq), "--output", str(tmp_path / "rec.json"), "--num_images", "5",
            "--fashion_mnist_dir", str(tmp_path), "--classifier", "tests/data/fmnist_classifier.safetensors"]  # fmt: skip
    result = evaluate_tokenizer.main(evaluate_tokenizer.parse_args(argv))
    for key in ("classifier_accuracy", "classifier_accuracy_on_real"):
        assert result[key] in {i / 5 for i in range(6)}
    assert result["logit_mse"] > 0  # random-weight tokenizer: reconstructions differ from the originals

    # the metric itself: identical reconstructions give zero logit MSE and equal accuracies
    classifier = evaluate_tokenizer.load_classifier("tests/data/fmnist_classifier.safetensors")
    images, labels = evaluate_tokenizer.test_images(5, 32, tmp_path)
    same = evaluate_tokenizer.classifier_metrics(classifier, images, images.clone(), labels, batch_size=2)
    assert same["logit_mse"] == 0 and same["classifier_accuracy"] == same["classifier_accuracy_on_real"]
