"""FID, Inception Score, k-NN precision/recall and the reference-statistics cache of [`bar_hf.evaluation`].

The conventions (ADM evaluator) are described in the docstring of [`bar_hf.evaluation`].
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

PRECISION_RECALL_K = 3
#: Samples per Inception Score split (ADM evaluator).
IS_SPLIT_SIZE = 5000


# ---------------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------------


# relative size (to |mu1 - mu2|^2 + tr S1 + tr S2) of a negative Fréchet distance treated as rounding error → 0
FID_NEGATIVE_TOLERANCE = 1e-6


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between two Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (the FID formula).

    ``tr((sigma1 sigma2)^1/2)`` is the sum of the square roots of the eigenvalues of the symmetric PSD matrix
    ``sigma1^1/2 sigma2 sigma1^1/2``; tiny negative eigenvalues from rounding are clipped to zero. Symmetric in its
    two arguments up to floating-point error. Computed in float64. The result is never negative: a tiny negative
    value from rounding (at most ``FID_NEGATIVE_TOLERANCE`` = 1e-6 of ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2)``;
    identical image sets give about -1e-4 otherwise) is returned as 0.0, a larger one raises ``ValueError``.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"`mu1` and `mu2` must be vectors of the same length, got shapes {mu1.shape}, {mu2.shape}")
    dim = mu1.shape[0]
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (dim, dim):
            raise ValueError(f"`{name}` must have shape ({dim}, {dim}) to match the means, got {sigma.shape}")
        if not np.isfinite(sigma).all():
            raise ValueError(f"`{name}` contains non-finite values")
    diff = mu1 - mu2
    eigval1, eigvec1 = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    sqrt_sigma1 = (eigvec1 * np.sqrt(np.clip(eigval1, 0.0, None))) @ eigvec1.T
    middle = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    eigvals = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eigvals, 0.0, None)).sum())
    scale = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2))
    distance = scale - 2.0 * tr_covmean
    if distance < 0:
        # the true value is >= 0; rounding in the eigen-decompositions leaves tiny negatives (identical sets:
        # about -1e-4 for 2048-d Inception features), reported as 0. A clearly negative value means the inputs are
        # not covariance matrices.
        if distance < -FID_NEGATIVE_TOLERANCE * max(scale, 1.0):
            raise ValueError(
                f"Fréchet distance came out clearly negative ({distance:.6g}): `sigma1` / `sigma2` must be symmetric "
                "positive semi-definite covariance matrices."
            )
        distance = 0.0
    return distance


def inception_score(logits: np.ndarray, split_size: int = IS_SPLIT_SIZE) -> tuple[float, float]:
    """Inception Score ``exp(E_x KL(p(y|x) || p(y)))`` from classifier logits, ADM-style.

    Samples are cut into consecutive splits of ``split_size`` (the last one may be shorter); the score of each split
    uses that split's marginal ``p(y)``. Returns ``(mean, std)`` over splits (ADM prints the mean).
    """
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2 or logits.shape[0] < 1 or logits.shape[1] < 2:
        raise ValueError(f"`logits` must have shape (num_samples >= 1, num_classes >= 2), got {logits.shape}")
    if not isinstance(split_size, int) or split_size < 1:
        raise ValueError(f"`split_size` must be a positive integer, got {split_size!r}")
    log_probs = logits - logits.max(axis=1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
    probs = np.exp(log_probs)
    scores = []
    for start in range(0, len(probs), split_size):
        part, log_part = probs[start : start + split_size], log_probs[start : start + split_size]
        log_marginal = np.log(part.mean(axis=0, keepdims=True))
        kl = (part * (log_part - log_marginal)).sum(axis=1).mean()
        scores.append(float(np.exp(kl)))
    return float(np.mean(scores)), float(np.std(scores))


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances ``(len(a), len(b))``, clamped at 0 (ADM's formula)."""
    norm_a = (a * a).sum(dim=1, keepdim=True)
    norm_b = (b * b).sum(dim=1).unsqueeze(0)
    return (norm_a - 2.0 * a @ b.T + norm_b).clamp_min_(0.0)


def _check_features(features: Any, name: str, min_samples: int = 1) -> torch.Tensor:
    array = np.asarray(features, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] < min_samples:
        raise ValueError(f"`{name}` must have shape (num_samples >= {min_samples}, dim), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"`{name}` contains non-finite values")
    return torch.from_numpy(np.ascontiguousarray(array))


def check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"`k` must be a positive integer (number of nearest neighbours), got {k!r}")


def manifold_radii(
    features: np.ndarray, k: int = PRECISION_RECALL_K, batch_size: int = 1024, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Squared distance from each sample to its k-th nearest neighbour in the same set (the sample itself excluded
    by counting it as the 0-th neighbour, exactly as ADM's ``np.partition(..., kth=[0..k])[:, k]``)."""
    check_k(k)
    feats = _check_features(features, "features", min_samples=k + 1).to(device)
    radii = []
    for start in range(0, len(feats), batch_size):
        dist = _squared_distances(feats[start : start + batch_size], feats)
        radii.append(torch.kthvalue(dist, k + 1, dim=1).values)
    return torch.cat(radii).cpu().numpy()


def _fraction_inside(
    queries: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor, batch_size: int
) -> tuple[float, np.ndarray]:
    inside = []
    for start in range(0, len(queries), batch_size):
        dist = _squared_distances(queries[start : start + batch_size], centers)
        inside.append((dist <= radii.unsqueeze(0)).any(dim=1))
    flags = torch.cat(inside).cpu().numpy()
    return float(flags.mean()), flags


def precision_recall(
    reference_features: np.ndarray,
    generated_features: np.ndarray,
    k: int = PRECISION_RECALL_K,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019) with the ADM evaluator's k-NN manifolds.

    precision: fraction of generated samples inside the reference manifold (some reference ball contains them);
    recall: fraction of reference samples inside the generated manifold. Both sets need at least ``k + 1`` samples.
    """
    check_k(k)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}")
    ref = _check_features(reference_features, "reference_features", min_samples=k + 1).to(device)
    gen = _check_features(generated_features, "generated_features", min_samples=k + 1).to(device)
    if ref.shape[1] != gen.shape[1]:
        raise ValueError(
            f"`reference_features` and `generated_features` must have the same dimension, got {ref.shape[1]} and "
            f"{gen.shape[1]}"
        )
    ref_radii = torch.from_numpy(manifold_radii(ref.cpu().numpy(), k, batch_size, device)).to(device)
    gen_radii = torch.from_numpy(manifold_radii(gen.cpu().numpy(), k, batch_size, device)).to(device)
    precision, _ = _fraction_inside(gen, ref, ref_radii, batch_size)
    recall, _ = _fraction_inside(ref, gen, gen_radii, batch_size)
    return precision, recall


# ---------------------------------------------------------------------------------------------------------------------
# Statistics (.npz cache)
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class ReferenceStatistics:
    """Feature statistics of an image set: ``mu`` (D,), ``sigma`` (D, D) and optionally the raw ``features``
    (N, D), needed for precision/recall. ``source`` describes the feature extractor (None if unknown, e.g. an ADM
    reference batch)."""

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None = None
    num_samples: int | None = None
    source: dict[str, Any] | None = field(default=None)


def statistics_from_features(
    features: np.ndarray, source: dict[str, Any] | None = None, keep_features: bool = True
) -> ReferenceStatistics:
    """Mean and covariance (``np.cov(rowvar=False)``, float64) of ``(N >= 2, D)`` features."""
    feats = np.asarray(features)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(
            f"`features` must have shape (num_samples >= 2, dim) to estimate a covariance, got {feats.shape}"
        )
    feats64 = feats.astype(np.float64)
    return ReferenceStatistics(
        mu=feats64.mean(axis=0),
        sigma=np.cov(feats64, rowvar=False),
        features=feats.astype(np.float32) if keep_features else None,
        num_samples=int(feats.shape[0]),
        source=source,
    )


def save_reference_statistics(path: str | os.PathLike, stats: ReferenceStatistics) -> Path:
    """Save statistics to an uncompressed ``.npz`` with keys ``mu``, ``sigma``, ``num_samples``, ``source_json`` and
    (if present) ``features``. The write is atomic (temporary file + rename)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"`path` must end with .npz, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "mu": np.asarray(stats.mu, np.float64),
        "sigma": np.asarray(stats.sigma, np.float64),
        "num_samples": np.asarray(-1 if stats.num_samples is None else stats.num_samples, np.int64),
        "source_json": np.asarray(json.dumps(stats.source, sort_keys=True)),
    }
    if stats.features is not None:
        arrays["features"] = np.asarray(stats.features, np.float32)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


def load_reference_statistics(path: str | os.PathLike) -> ReferenceStatistics:
    """Load statistics saved by :func:`save_reference_statistics`, or the ``mu``/``sigma`` of an ADM reference batch
    (e.g. ``VIRTUAL_imagenet256_labeled.npz``; those come without features and with source None: they were computed
    with the TF Inception graph)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"`path` must be an existing .npz file, got {str(path)!r}")
    with np.load(path, allow_pickle=False) as data:
        if "mu" not in data or "sigma" not in data:
            raise ValueError(
                f"{str(path)!r} has no 'mu'/'sigma' arrays (keys: {sorted(data.keys())}); an image batch such as ADM's "
                "'arr_0' must first go through compute_reference_statistics"
            )
        features = data["features"] if "features" in data else None
        num_samples = int(data["num_samples"]) if "num_samples" in data else None
        if num_samples is not None and num_samples < 0:
            num_samples = None
        source = json.loads(str(data["source_json"])) if "source_json" in data else None
        return ReferenceStatistics(
            mu=data["mu"], sigma=data["sigma"], features=features, num_samples=num_samples, source=source
        )


def same_source(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool | None:
    """True/False if both sources are known and comparable, None if either is unknown."""
    if a is None or b is None:
        return None
    if "sha1" in a and "sha1" in b:
        return a["sha1"] == b["sha1"]
    return a.get("name") == b.get("name")
