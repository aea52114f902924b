"""The web app's logic without Gradio: load a pipeline, generate, edit, write the downloads.

Every callback of the Gradio page ([`bar_hf.app.demo`]) calls one method of [`BARApp`]; these methods take plain
Python values (what the page's components hand over) and return plain values, so they are unit-tested without a
browser. They only use the public API of `bar_hf` (pipelines, schedulers, `bar_hf.masks`, pipeline call arguments).

Seeds follow `bar-hf generate --seed S` / `bar-hf inpaint --seed S`: image `i` of a request (label-major order) is
drawn with `torch.Generator().manual_seed(S + i)`, so the page's images equal the command line's.
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
import threading
import traceback
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .. import (
    BARAdaptiveBitScheduler,
    BARBitScheduler,
    BARInpaintPipeline,
    BARLogProbBitScheduler,
    BARPipeline,
    __version__,
    bundled_model_path,
)
from ..masks import MASK_NAMES, make_mask

#: scheduler choices of the page → classes (swapped with `X.from_config(pipe.scheduler.config)`)
SCHEDULERS: dict[str, type] = {
    "fixed (BARBitScheduler)": BARBitScheduler,
    "log-prob (BARLogProbBitScheduler)": BARLogProbBitScheduler,
    "adaptive (BARAdaptiveBitScheduler)": BARAdaptiveBitScheduler,
}
GUIDANCE_SCHEDULES = ("linear", "constant")
ORDERS = ("raster", "kept_first")
PAINTED_MASK = "painted (brush)"
UPLOADED_MASK = "uploaded mask image"
#: mask choices of the Edit tab: the brush, the named masks of `bar_hf.masks`, an uploaded mask image
MASK_CHOICES = (PAINTED_MASK, *MASK_NAMES, UPLOADED_MASK)
#: errors shown in the page as a message (the pipelines raise ValueError / TypeError for bad arguments; OSError covers
#: unreadable uploads); anything else is shown as "internal error" with the traceback in the server's log only
USER_ERRORS = (ValueError, TypeError, OSError)

ProgressFn = Callable[[float, str], None]


def _as_label(value: Any) -> int | str:
    """A class picker value: ids typed as text ("7") become ints, names stay names."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _as_int(value: Any, name: str) -> int:
    """Whole numbers from the page's number boxes (which may hand over floats like 3.0)."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"`{name}` must be a whole number, got {value!r}.")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"`{name}` must be a whole number, got {value!r}.")
        value = int(value)
    if not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be a whole number, got {type(value).__name__}.")
    return int(value)


def _fmt(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def error_message(error: BaseException) -> str:
    """The text shown in the page for a failed request (never a traceback)."""
    if isinstance(error, UnidentifiedImageError):
        return f"the uploaded file is not an image ({error})"
    if isinstance(error, USER_ERRORS):
        return str(error)
    return f"internal error ({type(error).__name__}); see the server log"


@dataclass
class GenerateResult:
    images: list[Image.Image]
    captions: list[str]
    settings: dict[str, Any]
    zip_path: str
    settings_path: str


@dataclass
class EditResult:
    original: Image.Image
    mask: Image.Image
    completions: list[Image.Image]
    settings: dict[str, Any]
    zip_path: str
    settings_path: str
    captions: list[str] = field(default_factory=list)


class BARApp:
    """One loaded `BARPipeline` (and a `BARInpaintPipeline` sharing its weights) serving the page's requests.

    Requests run one at a time (a lock): they swap the scheduler of the shared pipeline.
    """

    def __init__(self, pipe: BARPipeline, model: str | None = None):
        self.pipe = pipe
        self.model = model  # None: the bundled model
        self.editor = BARInpaintPipeline.from_pipe(pipe)
        for p in (self.pipe, self.editor):
            p.set_progress_bar_config(disable=True)
        base = pipe.scheduler
        self.default_scheduler = next((k for k, v in SCHEDULERS.items() if type(base) is v), None)
        self._schedulers = {
            name: base if type(base) is cls else cls.from_config(base.config) for name, cls in SCHEDULERS.items()
        }
        self._base_scheduler = base
        self._lock = threading.Lock()
        self._tmp = tempfile.TemporaryDirectory(prefix="bar_hf_app_")
        self._requests = 0

    @classmethod
    def from_pretrained(cls, model: str | None = None, **kwargs) -> BARApp:
        """Load `model` (a pipeline folder or Hub id; default: the bundled Fashion-MNIST model)."""
        if model is not None and os.path.isdir(model) and not os.path.isfile(os.path.join(model, "model_index.json")):
            raise ValueError(f"`--model` {model!r} is a folder without model_index.json: not a saved BARPipeline.")
        pipe = BARPipeline.from_pretrained(model or bundled_model_path(), **kwargs)
        return cls(pipe, model)

    # ------------------------------------------------------------------------------------------------ page data
    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the model's images."""
        vq = self.pipe.vqvae
        return tuple(s * vq.config.patch_size for s in vq.grid_size)

    def class_choices(self) -> list[tuple[str, str]]:
        """(shown text, value) of the class picker, one per class id: "7: Sneaker" → "Sneaker" (a class without a
        name in `pipe.id2label` is shown and passed as its id)."""
        names = self.pipe.id2label
        choices = []
        for i in range(self.pipe.transformer.config.num_classes):
            name = names.get(i, "").split(",")[0].strip()
            choices.append((f"{i}: {name}", name) if name else (str(i), str(i)))
        return choices

    def class_name(self, label: int) -> str:
        return self.pipe.id2label.get(label, str(label)).split(",")[0].strip()

    def defaults(self) -> dict[str, Any]:
        """The model's saved sampling settings (the page's initial values)."""
        config = self._base_scheduler.config
        return {
            "guidance_scale": float(self.pipe.config.guidance_scale),
            "guidance_schedule": self.pipe.config.guidance_schedule,
            "temperature": float(config.temperature),
            "num_inference_steps": int(config.num_inference_steps),
            "max_inference_steps": int(config.bits_per_token),
            "scheduler": self.default_scheduler or next(iter(SCHEDULERS)),
            "order": self.editor.default_order,
            "bits_per_token": int(config.bits_per_token),
        }

    def _model_option(self) -> list[str]:
        return [] if self.model is None else ["--model", str(self.model)]

    def _request_dir(self) -> Path:
        self._requests += 1
        folder = Path(self._tmp.name) / f"request-{self._requests:05d}"
        folder.mkdir(parents=True)
        return folder

    @staticmethod
    def _progress_callback(progress: ProgressFn | None, what: str):
        if progress is None:
            return None

        def callback(pipe, i, t, callback_kwargs):
            progress((i + 1) / max(pipe.num_timesteps, 1), f"{what}: token {i + 1}/{pipe.num_timesteps}")
            return {}

        return callback

    # ------------------------------------------------------------------------------------------------ generate
    def generate(
        self,
        class_labels: list | str | int,
        num_images_per_label: int = 1,
        seed: int = 0,
        guidance_scale: float | None = None,
        guidance_schedule: str | None = None,
        temperature: float | None = None,
        scheduler: str | None = None,
        num_inference_steps: int | None = None,
        progress: ProgressFn | None = None,
    ) -> GenerateResult:
        """Images for `class_labels` (names or ids), `num_images_per_label` each; image `i` uses seed `seed + i`."""
        labels = [_as_label(c) for c in ([] if class_labels is None else
                  class_labels if isinstance(class_labels, (list, tuple)) else [class_labels])]  # fmt: skip
        num_images_per_label = _as_int(num_images_per_label, "num_images_per_label")
        seed = _as_int(seed, "seed")
        scheduler = scheduler or self.defaults()["scheduler"]
        if scheduler not in SCHEDULERS:
            raise ValueError(f"`scheduler` must be one of {list(SCHEDULERS)}, got {scheduler!r}.")
        if num_inference_steps is not None:
            num_inference_steps = _as_int(num_inference_steps, "num_inference_steps")
        count = len(labels) * max(num_images_per_label, 0)
        generators = [torch.Generator().manual_seed(seed + i) for i in range(count)]
        with self._lock:
            self.pipe.scheduler = self._schedulers[scheduler]
            try:
                images = self.pipe(
                    class_labels=labels,
                    num_images_per_label=num_images_per_label,
                    guidance_scale=guidance_scale,
                    guidance_schedule=guidance_schedule,
                    num_inference_steps=num_inference_steps,
                    temperature=temperature,
                    generator=generators,
                    callback_on_step_end=self._progress_callback(progress, "generating"),
                    callback_on_step_end_tensor_inputs=["bits"],
                ).images
            finally:
                self.pipe.scheduler = self._base_scheduler
        label_ids = self._resolved_ids(labels)
        settings = self._generate_settings(
            label_ids, num_images_per_label, seed, guidance_scale, guidance_schedule, temperature, scheduler,
            num_inference_steps,
        )  # fmt: skip
        captions = [
            f"{self.class_name(label_ids[i // num_images_per_label])} · seed {seed + i}" for i in range(len(images))
        ]
        folder = self._request_dir()
        names = [f"{i:05d}_class{label_ids[i // num_images_per_label]}_seed{seed + i}.png" for i in range(len(images))]
        zip_path, settings_path = self._write_downloads(folder, "bar_images", dict(zip(names, images)), settings)
        return GenerateResult(images, captions, settings, zip_path, settings_path)

    def _resolved_ids(self, labels: list) -> list[int]:
        return [label if isinstance(label, int) else self.pipe.get_label_ids(label)[0] for label in labels]

    def _generate_settings(
        self, label_ids, num_images_per_label, seed, guidance_scale, guidance_schedule, temperature, scheduler, steps
    ) -> dict[str, Any]:
        defaults = self.defaults()
        guidance_scale = defaults["guidance_scale"] if guidance_scale is None else float(guidance_scale)
        guidance_schedule = guidance_schedule or defaults["guidance_schedule"]
        temperature = defaults["temperature"] if temperature is None else float(temperature)
        steps = defaults["num_inference_steps"] if steps is None else steps
        scheduler_class = SCHEDULERS[scheduler].__name__
        total = len(label_ids) * num_images_per_label
        args = [
            "bar-hf", "generate", *self._model_option(), "--class-labels", *map(str, label_ids),
            "--num-images-per-label", str(num_images_per_label), "--seed", str(seed),
            "--guidance-scale", _fmt(guidance_scale), "--guidance-schedule", guidance_schedule,
            "--num-inference-steps", str(steps), "--temperature", _fmt(temperature), "--output-dir", "bar_images",
        ]  # fmt: skip
        model = repr(self.model) if self.model is not None else "bundled_model_path()"
        swap = "" if scheduler == self.default_scheduler else (
            f"pipe.scheduler = {scheduler_class}.from_config(pipe.scheduler.config)\n")  # fmt: skip
        python = (
            "import torch\n"
            f"from bar_hf import BARPipeline, {scheduler_class}, bundled_model_path\n"
            f"pipe = BARPipeline.from_pretrained({model})\n{swap}"
            f"images = pipe({label_ids}, num_images_per_label={num_images_per_label}, "
            f"guidance_scale={_fmt(guidance_scale)}, guidance_schedule={guidance_schedule!r}, "
            f"num_inference_steps={steps}, temperature={_fmt(temperature)},\n"
            f"              generator=[torch.Generator().manual_seed({seed} + i) for i in range({total})]).images\n"
        )
        return {
            "task": "generate",
            "bar_hf_version": __version__,
            "model": self.model or "bundled",
            "class_labels": label_ids,
            "class_names": [self.class_name(i) for i in label_ids],
            "num_images_per_label": num_images_per_label,
            "seed": seed,
            "seed_rule": "image i (label-major order) uses torch.Generator().manual_seed(seed + i)",
            "guidance_scale": guidance_scale,
            "guidance_schedule": guidance_schedule,
            "temperature": temperature,
            "scheduler": scheduler_class,
            "num_inference_steps": steps,
            # `bar-hf generate` samples with the model's saved scheduler: it reproduces other schedulers' images only
            # through the Python snippet
            "command": shlex.join(args) if scheduler == self.default_scheduler else None,
            "python": python,
        }

    # ------------------------------------------------------------------------------------------------ edit
    def load_image(self, path_or_image: Any, what: str = "image") -> Image.Image:
        """An uploaded file (path) or an image handed over by the page, as a PIL image; a `ValueError` when absent."""
        if path_or_image is None:
            if what == "image":
                raise ValueError("upload an image first (or send one from the Generate tab's gallery).")
            raise ValueError(f"upload a {what} first.")
        if isinstance(path_or_image, Image.Image):
            return path_or_image
        if isinstance(path_or_image, np.ndarray):
            return Image.fromarray(path_or_image)
        if isinstance(path_or_image, (str, os.PathLike)):
            with Image.open(path_or_image) as image:
                image.load()
                return image.copy()
        raise TypeError(f"`{what}` must be an image file or an image, got {type(path_or_image).__name__}.")

    def painted_mask(self, editor_value: Any) -> np.ndarray:
        """Mask (model size, float32 0/1, 1 = regenerate) from the image editor's value: every painted pixel of its
        layers; a model pixel is regenerated when any painted canvas pixel inside it is (max pooling)."""
        layers = (editor_value or {}).get("layers") or []
        painted = None
        for layer in layers:
            array = np.asarray(layer)
            if array.ndim == 3 and array.shape[2] == 4:
                alpha = array[..., 3]  # RGBA strokes: painted where opaque
            else:
                alpha = array.reshape(*array.shape[:2], -1).max(-1)
            painted = alpha > 0 if painted is None else painted | (alpha > 0)
        if painted is None or not painted.any():
            raise ValueError(
                "paint the region to regenerate on the image with the brush first (or pick a named mask)."
            )
        pooled = torch.nn.functional.adaptive_max_pool2d(
            torch.from_numpy(painted).float()[None, None], self.image_size
        )
        return pooled[0, 0].numpy()

    def edit_mask(self, choice: str, editor_value: Any, mask_upload: Any, seed: int) -> Any:
        """The `mask_image` handed to the pipeline for a mask choice of the page."""
        if choice == PAINTED_MASK:
            return self.painted_mask(editor_value)
        if choice == UPLOADED_MASK:
            return self.load_image(mask_upload, "mask image").convert("L")
        if choice in MASK_NAMES:
            height, width = self.image_size
            return make_mask(choice, height, width, generator=torch.Generator().manual_seed(seed))
        raise ValueError(f"`mask` must be one of {list(MASK_CHOICES)}, got {choice!r}.")

    def edit(
        self,
        image: Any,
        mask_choice: str,
        editor_value: Any = None,
        mask_upload: Any = None,
        class_label: Any = None,
        order: str | None = None,
        keep_bits: int | None = None,
        num_samples: int = 4,
        seed: int = 0,
        guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        temperature: float | None = None,
        progress: ProgressFn | None = None,
    ) -> EditResult:
        """Regenerate the masked part of `image` as `class_label`: `num_samples` completions, completion `i` with
        seed `seed + i` (as `bar-hf inpaint`)."""
        seed = _as_int(seed, "seed")
        num_samples = _as_int(num_samples, "num_samples")
        if num_samples < 1:
            raise ValueError(f"`num_samples` must be >= 1, got {num_samples}.")
        if keep_bits is not None:
            keep_bits = _as_int(keep_bits, "keep_bits")
            keep_bits = None if keep_bits == 0 else keep_bits
        if num_inference_steps is not None:
            num_inference_steps = _as_int(num_inference_steps, "num_inference_steps")
        picture = self.load_image(image)
        mask = self.edit_mask(mask_choice, editor_value, mask_upload, seed)
        label = _as_label(class_label if not isinstance(class_label, (list, tuple)) else list(class_label))
        if label is None or label == "" or label == []:
            label = []  # the pipeline's own message for an empty class
        with self._lock:
            self.editor.scheduler = self._base_scheduler
            inputs = self.editor.prepare_inputs(picture, mask, label, order, keep_bits)  # validates like __call__
            completions = self.editor(
                [picture] * num_samples, mask, label, order=order, keep_bits=keep_bits,
                guidance_scale=guidance_scale, num_inference_steps=num_inference_steps, temperature=temperature,
                generator=[torch.Generator().manual_seed(seed + i) for i in range(num_samples)],
                callback_on_step_end=self._progress_callback(progress, "editing"),
                callback_on_step_end_tensor_inputs=["bits"],
            ).images  # fmt: skip
        mode = "L" if self.pipe.vqvae.config.out_channels == 1 else "RGB"
        pixels = inputs.pixels[0].permute(1, 2, 0).squeeze(-1).numpy()
        original = Image.fromarray((pixels * 255).round().astype(np.uint8)).convert(mode)
        kept = self.editor.kept_pixel_mask(inputs.regenerate)[0, 0].numpy()
        mask_view = Image.fromarray(np.where(kept, 0, 255).astype(np.uint8))
        label_id = inputs.labels[0]
        settings = self._edit_settings(
            label_id, mask_choice, inputs.order, keep_bits, num_samples, seed, guidance_scale, num_inference_steps,
            temperature,
        )  # fmt: skip
        folder = self._request_dir()
        files = {"image.png": picture, "mask.png": mask_view, "original_model_size.png": original}
        files.update({f"completion_{i:02d}_seed{seed + i}.png": c for i, c in enumerate(completions)})
        zip_path, settings_path = self._write_downloads(folder, "bar_edit", files, settings)
        captions = ["original", "mask (white = regenerated)"] + [f"seed {seed + i}" for i in range(num_samples)]
        return EditResult(original, mask_view, completions, settings, zip_path, settings_path, captions)

    def _edit_settings(
        self, label_id, mask_choice, order, keep_bits, num_samples, seed, guidance_scale, steps, temperature
    ) -> dict[str, Any]:
        defaults = self.defaults()
        guidance_scale = defaults["guidance_scale"] if guidance_scale is None else float(guidance_scale)
        temperature = defaults["temperature"] if temperature is None else float(temperature)
        steps = defaults["num_inference_steps"] if steps is None else steps
        named = mask_choice in MASK_NAMES
        args = [
            "bar-hf", "inpaint", "image.png", "--mask", mask_choice if named else "mask.png", *self._model_option(),
            "--class-labels", str(label_id), "--order", order, *(["--keep-bits", str(keep_bits)] if keep_bits else []),
            "--num-samples", str(num_samples), "--seed", str(seed), "--guidance-scale", _fmt(guidance_scale),
            "--num-inference-steps", str(steps), "--temperature", _fmt(temperature), "--output", "bar_edit.png",
        ]  # fmt: skip
        return {
            "task": "edit",
            "bar_hf_version": __version__,
            "model": self.model or "bundled",
            "image": "image.png",
            "mask": mask_choice if named else "mask.png (white = regenerated tokens)",
            "class_label": label_id,
            "class_name": self.class_name(label_id),
            "order": order,
            "keep_bits": keep_bits,
            "num_samples": num_samples,
            "seed": seed,
            "seed_rule": "completion i uses torch.Generator().manual_seed(seed + i)",
            "guidance_scale": guidance_scale,
            "guidance_schedule": self.pipe.config.guidance_schedule,
            "temperature": temperature,
            "scheduler": type(self._base_scheduler).__name__,
            "num_inference_steps": steps,
            "command": shlex.join(args),
        }

    # ------------------------------------------------------------------------------------------------ files
    @staticmethod
    def _write_downloads(folder: Path, stem: str, images: dict[str, Image.Image], settings: dict) -> tuple[str, str]:
        settings_path = folder / f"{stem}_settings.json"
        settings_path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        zip_path = folder / f"{stem}.zip"
        with zipfile.ZipFile(zip_path, "w") as archive:
            for name, image in images.items():
                path = folder / name
                image.save(path)
                archive.write(path, f"{stem}/{name}")
            archive.write(settings_path, f"{stem}/settings.json")
        return str(zip_path), str(settings_path)


def run_safely(function: Callable, *args, **kwargs) -> tuple[Any, str | None]:
    """`(result, None)`, or `(None, message)` when `function` raised: the page shows the message, the server goes on."""
    try:
        return function(*args, **kwargs), None
    except Exception as error:  # noqa: BLE001 - every failure becomes a message in the page
        if not isinstance(error, USER_ERRORS):
            traceback.print_exc()
        return None, error_message(error)
