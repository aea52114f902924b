"""`BARPipeline`: class labels → bits (AR backbone + scheduler-driven MBM head) → images (docs/method.md §4.4)."""

from __future__ import annotations

import contextvars
from collections.abc import Callable

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import logging

from ..bits import MASK_BIT, unpatchify_bits
from ..models.layerwise_casting import (
    check_layerwise_casting_arguments,
    enable_layerwise_casting,
    layerwise_casting_dtypes,
)
from ..models.modeling_bar import BARForCausalImageModeling
from ..models.vq_model import BARVQModel
from ..schedulers.scheduling_bar import BARSchedulerMixin
from .hub import BARHubMixin
from .inputs import (
    MAX_BATCH_SIZE,
    LabelIndex,
    as_float,
    as_int,
    check_batch_size,
    check_callback_bits,
    check_callback_outputs,
    check_generator,
    check_guidance_scale,
    check_guidance_schedule,
    estimate_sampling_memory,
    parse_id2label,
)
from .lora import BARLoraLoaderMixin
from .sampling import SamplingPlan, SamplingState, compile_step_functions, sample_token

__all__ = ["BARPipeline", "guidance_weight"]

logger = logging.get_logger(__name__)

_GUIDANCE_SCHEDULES = ("linear", "constant")
_SHARING_CAST_COMPONENTS = contextvars.ContextVar("bar_sharing_cast_components", default=False)
_COMPONENT_TYPES = {"vqvae": BARVQModel, "transformer": BARForCausalImageModeling, "scheduler": BARSchedulerMixin}


def guidance_weight(guidance_scale: float, step: int, num_steps: int, schedule: str = "linear") -> float:
    """CFG weight of AR step `step`: `1 + (g − 1)·i/N` ("linear", the authors') or `g` ("constant")."""
    if schedule == "linear":
        return 1 + (guidance_scale - 1) * step / num_steps
    if schedule == "constant":
        return guidance_scale
    raise ValueError(f"`guidance_schedule` must be one of {_GUIDANCE_SCHEDULES}, got {schedule!r}.")


class BARPipeline(BARLoraLoaderMixin, BARHubMixin, DiffusionPipeline):
    r"""Class-conditional image generation with BAR.

    Components:
        vqvae ([`BARVQModel`]): the bit tokenizer (its decoder turns bits into pixels).
        transformer ([`BARForCausalImageModeling`]): backbone + bit head.
        scheduler ([`BARBitScheduler`] or any [`BARSchedulerMixin`]): decides which bits to reveal per head step.

    Args:
        id2label (`dict[int, str]`, *optional*): class names (comma-separated synonyms allowed, as ImageNet's).
        guidance_scale (`float`, *optional*, defaults to 1.0): default CFG scale stored with the pipeline (the
            converted authors' models store their evaluation values).
        guidance_schedule (`str`, *optional*, defaults to `"linear"`): default CFG schedule (`"linear"` ramp
            `1 + (g − 1)·i/N`, the authors'; or `"constant"`).

    Example:

    ```py
    >>> import torch, bar_hf
    >>> pipe = bar_hf.BARPipeline.from_pretrained(bar_hf.bundled_model_path())
    >>> images = pipe(["Sneaker", "Dress"], generator=torch.Generator().manual_seed(0)).images
    ```
    """

    model_cpu_offload_seq = "transformer->vqvae"
    max_batch_size = MAX_BATCH_SIZE  # images per call (`len(class_labels) * num_images_per_label`)
    _callback_tensor_inputs = ["bits", "conditions", "latents"]

    def __init__(
        self,
        vqvae: BARVQModel,
        transformer: BARForCausalImageModeling,
        scheduler: BARSchedulerMixin,
        id2label: dict | None = None,
        guidance_scale: float = 1.0,
        guidance_schedule: str = "linear",
    ):
        super().__init__()
        for name, component in (("vqvae", vqvae), ("transformer", transformer), ("scheduler", scheduler)):
            if not isinstance(component, _COMPONENT_TYPES[name]):
                raise TypeError(
                    f"`{name}` must be a {_COMPONENT_TYPES[name].__name__}, got {type(component).__name__} (check the "
                    f"`{name}` entry of model_index.json)."
                )
        if vqvae.config.num_bits != transformer.config.num_bits:
            raise ValueError(
                f"`vqvae` has {vqvae.config.num_bits} bits per token but `transformer` expects "
                f"{transformer.config.num_bits}; they must agree."
            )
        grid = tuple(vqvae.grid_size)
        if grid != (transformer.config.latent_height, transformer.config.latent_width):
            raise ValueError(
                f"`vqvae` latent grid {grid} differs from the `transformer` grid "
                f"{(transformer.config.latent_height, transformer.config.latent_width)}."
            )
        guidance_scale = check_guidance_scale(guidance_scale)
        check_guidance_schedule(guidance_schedule)
        id2label = parse_id2label(id2label, transformer.config.num_classes)
        self.register_modules(vqvae=vqvae, transformer=transformer, scheduler=scheduler)
        self.register_to_config(
            id2label={str(k): v for k, v in id2label.items()} if id2label else None,
            guidance_scale=guidance_scale,
            guidance_schedule=guidance_schedule,
        )
        self._label_index = LabelIndex(id2label)
        self.labels = self._label_index.exact  # exact name → id (every comma-separated synonym)

    def __setattr__(self, name, value):
        """Components are checked when assigned (`pipe.scheduler = ...`), not when sampling fails later."""
        if name == "scheduler" and "transformer" in self.__dict__:
            self._check_scheduler(value)
        super().__setattr__(name, value)

    def _check_scheduler(self, scheduler) -> None:
        if not isinstance(scheduler, BARSchedulerMixin):
            raise TypeError(
                f"`scheduler` must be a BARSchedulerMixin (a bit scheduler), got {type(scheduler).__name__}."
            )
        k = self.transformer.config.bits_per_token
        if scheduler.config.bits_per_token != k:
            raise ValueError(
                f"`scheduler.config.bits_per_token` ({scheduler.config.bits_per_token}) must equal the transformer's "
                f"bits per AR step k={k}; build it with `{type(scheduler).__name__}.from_config(pipe.scheduler.config)`."
            )

    # ------------------------------------------------------------------------------------------------ labels
    @property
    def id2label(self) -> dict[int, str]:
        return {int(k): v for k, v in (self.config.id2label or {}).items()}

    def get_label_ids(self, label: str | list[str]) -> list[int]:
        """Map class names (any comma-separated synonym of `id2label`) to ids.

        Names match exactly first, then case-insensitively; a name shared by several classes (exactly, or only
        case-insensitively) raises a `ValueError` listing the class ids.
        """
        labels = [label] if isinstance(label, str) else label
        if not isinstance(labels, (list, tuple)) or not all(isinstance(name, str) for name in labels):
            raise TypeError(
                f"`label` must be a class name or a list of class names, got {label!r}"
                + (
                    " (a class id needs no lookup: pass it to the pipeline as it is)."
                    if isinstance(label, int)
                    else "."
                )
            )
        return [self._label_index.lookup(name) for name in labels]

    def _resolve_labels(self, class_labels) -> list[int]:
        """Class ids from ids, names, numpy / torch arrays or DiT-style nested lists (flattened row-major)."""
        return self._label_index.resolve(class_labels, self.transformer.config.num_classes)

    # ------------------------------------------------------------------------------------------------ properties
    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    def enable_layerwise_casting(
        self,
        storage_dtype: torch.dtype = torch.float8_e4m3fn,
        compute_dtype: torch.dtype | None = None,
        non_blocking: bool = False,
    ) -> None:
        """Store the weights of both models (`transformer` and `vqvae`) in `storage_dtype` and compute in
        `compute_dtype` with diffusers' layerwise casting hooks (see `bar_hf.models.layerwise_casting`); not reversible.
        E.g. `pipe.enable_layerwise_casting(torch.float8_e4m3fn, torch.bfloat16)`. The FSQ quantizer stays float32.

        Checked for both models before either changes: a second call raises a `ValueError` and changes nothing.
        Afterwards `pipe.to(dtype)` and `save_pretrained` are refused (the weights were rounded to `storage_dtype`:
        reload the pipeline for another dtype or to save full-precision weights); `pipe.to(device)` works."""
        if not isinstance(non_blocking, bool):
            raise TypeError(f"`non_blocking` must be a bool, got {non_blocking!r}.")
        for model in (self.transformer, self.vqvae):
            check_layerwise_casting_arguments(model, storage_dtype, compute_dtype)
        for model in (self.transformer, self.vqvae):
            enable_layerwise_casting(model, storage_dtype, compute_dtype, non_blocking=non_blocking)

    def _check_no_layerwise_casting(self, action: str) -> None:
        for name in ("transformer", "vqvae"):
            enabled = layerwise_casting_dtypes(getattr(self, name))
            if enabled is not None:
                raise ValueError(
                    f"{action} is refused: layerwise casting is enabled on `{name}` (weights stored in {enabled[0]}, "
                    f"computed in {enabled[1]}), so its weights are rounded; reload the pipeline (`from_pretrained`) "
                    "to save or to use another dtype. Nothing was changed."
                )

    def to(self, *args, **kwargs):
        """`DiffusionPipeline.to`; a dtype change is refused while layerwise casting is enabled (device moves work)."""
        dtype = kwargs.get("dtype")
        dtype = dtype if dtype is not None else next((a for a in args if isinstance(a, torch.dtype)), None)
        if dtype is not None and _SHARING_CAST_COMPONENTS.get():  # `from_pipe`: the shared models keep their dtypes
            args = tuple(a for a in args if not isinstance(a, torch.dtype))
            kwargs = {key: value for key, value in kwargs.items() if key != "dtype"}
        elif dtype is not None:
            self._check_no_layerwise_casting(f"`to(dtype={dtype})`")
        return super().to(*args, **kwargs)

    @classmethod
    def from_pipe(cls, pipeline, **kwargs):
        """`DiffusionPipeline.from_pipe`; components with layerwise casting are shared as they are (diffusers would
        move the new pipeline to float32, undoing the float8 storage); an explicit `dtype` is refused for them."""
        cast = isinstance(pipeline, BARPipeline) and any(
            layerwise_casting_dtypes(getattr(pipeline, name)) is not None for name in ("transformer", "vqvae")
        )
        if cast and kwargs.get("dtype", kwargs.get("torch_dtype")) is None:
            token = _SHARING_CAST_COMPONENTS.set(True)
            try:
                return super().from_pipe(pipeline, **kwargs)
            finally:
                _SHARING_CAST_COMPONENTS.reset(token)
        return super().from_pipe(pipeline, **kwargs)

    def check_inputs(self, guidance_scale, generator, batch_size, output_type, callback_tensor_inputs) -> None:
        check_guidance_scale(guidance_scale)
        check_generator(generator, batch_size)
        if not isinstance(output_type, str) or output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"`output_type` must be one of 'pil', 'np', 'pt', 'latent', got {output_type!r}.")
        if callback_tensor_inputs is not None:
            if not isinstance(callback_tensor_inputs, (list, tuple)):
                raise TypeError(
                    "`callback_on_step_end_tensor_inputs` must be a list of tensor names, got "
                    f"{callback_tensor_inputs!r}."
                )
            unknown = [k for k in callback_tensor_inputs if k not in self._callback_tensor_inputs]
            if unknown:
                raise ValueError(
                    f"`callback_on_step_end_tensor_inputs` must be a subset of {self._callback_tensor_inputs}, "
                    f"got unknown {unknown}."
                )

    def _check_call_inputs(
        self,
        class_labels,
        num_images_per_label,
        guidance_scale,
        guidance_schedule,
        num_inference_steps,
        temperature,
        generator,
        output_type,
        return_dict,
        callback_on_step_end,
        callback_tensor_inputs,
        cache_implementation,
    ) -> tuple[list[int], float, str, int | None, float | None]:
        """Validate and normalise `__call__`'s arguments (numpy / torch scalars become Python numbers)."""
        if callback_on_step_end is not None and not callable(callback_on_step_end):
            raise TypeError(f"`callback_on_step_end` must be callable, got {type(callback_on_step_end).__name__}.")
        num_images_per_label = as_int(num_images_per_label, "num_images_per_label", minimum=1)
        labels = [label for label in self._resolve_labels(class_labels) for _ in range(num_images_per_label)]
        guidance_scale = self.config.guidance_scale if guidance_scale is None else guidance_scale
        guidance_schedule = self.config.guidance_schedule if guidance_schedule is None else guidance_schedule
        self.check_inputs(guidance_scale, generator, len(labels), output_type, callback_tensor_inputs)
        guidance_scale = float(guidance_scale)  # checked above: a real number (numpy / torch scalars too)
        check_guidance_schedule(guidance_schedule)
        if not isinstance(cache_implementation, str) or cache_implementation not in ("dynamic", "static"):
            raise ValueError(f"`cache_implementation` must be 'dynamic' or 'static', got {cache_implementation!r}.")
        if not isinstance(return_dict, bool):
            raise TypeError(f"`return_dict` must be a bool, got {return_dict!r}.")
        if num_inference_steps is not None:
            num_inference_steps = as_int(num_inference_steps, "num_inference_steps")
        if temperature is not None:
            temperature = as_float(temperature, "temperature", minimum=0.0)
        height, width = (size * self.vqvae.config.patch_size for size in self.vqvae.grid_size)
        pixels = self.vqvae.config.out_channels * height * width
        config, dtype = self.transformer.config, self.transformer.dtype
        estimate = estimate_sampling_memory(config, len(labels), guidance_scale > 1, dtype, pixels)
        check_batch_size(len(labels), estimate, self._execution_device, self.max_batch_size)
        return labels, guidance_scale, guidance_schedule, num_inference_steps, temperature

    # ------------------------------------------------------------------------------------------------ sampling
    def enable_compile(self, mode: str | None = None, backend: str = "inductor", **compile_kwargs) -> None:
        """Sample through `torch.compile`d per-step functions (backbone one-token step, guided head step) with a
        static KV cache, for generation and editing alike: one graph each serves every AR step of a call (no
        recompilation per step; CUDA-graph friendly with `mode="reduce-overhead"` on GPU). Compiled results equal
        eager ones up to float rounding.

        Graphs are specialised to shapes. The compile cache holds one compiled copy of each step function per batch
        shape `(rows, guidance on/off)` (in editing also per number of rows regenerating a slot): a new shape compiles
        new graphs, a shape seen before reuses its graphs whatever other shapes ran in between (each copy has its own
        torch recompile count). Limits: at most `MAX_COMPILED_SHAPES` (32) shapes per function, further shapes run
        eagerly; a shape that reaches `torch._dynamo.config.recompile_limit` runs eagerly from then on; each case warns
        once with the fix (fewer distinct batch sizes, or `enable_compile()` again for a fresh cache). See
        docs/guides/speed.md.

        If compilation fails (no compiler toolchain, unsupported platform) the pipeline warns once and samples
        eagerly. `disable_compile()` undoes it.
        """
        modes = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
        if not (mode is None or isinstance(mode, str)) or mode not in modes:
            raise ValueError(f"`mode` must be one of {modes}, got {mode!r}.")
        if not (isinstance(backend, str) and backend) and not callable(backend):
            raise TypeError(f"`backend` must be a torch.compile backend name or a callable, got {backend!r}.")
        self._compiled_steps = compile_step_functions(mode=mode, backend=backend, **compile_kwargs)

    def disable_compile(self) -> None:
        """Go back to eager sampling (see [`~BARPipeline.enable_compile`])."""
        self._compiled_steps = None

    def _sample_tokens(self, tokens: SamplingPlan, class_ids, schedule: str, generator, callback, tensor_inputs):
        """Walk the N AR slots for every row in lock step: the teacher-forced common prefix in one pass, then one
        backbone step per slot and the head loop for the rows that generate the slot's token. Fills `tokens.bits`
        (generation order) and returns how many slots were completed (fewer when interrupted)."""
        guided = self.do_classifier_free_guidance
        num_steps = self.transformer.config.num_ar_steps

        def double(x):
            return torch.cat([x, x]) if guided and x is not None else x

        start = tokens.start
        if start == num_steps:  # nothing to generate (editing with nothing masked)
            return num_steps
        compiled = getattr(self, "_compiled_steps", None)
        static = tokens.cache_implementation == "static" or compiled is not None
        orders = tokens.orders if tokens.orders is None or tokens.orders.shape[0] == 1 else double(tokens.orders)
        state = SamplingState(self.transformer, class_ids, orders, static=static, step_functions=compiled)
        conditions = state.prefill(double(tokens.bits[:, :start]) if start else None)
        self._num_timesteps = num_steps
        generated = start
        with self.progress_bar(total=num_steps - start) as progress_bar:
            for i in range(start, num_steps):
                if self.interrupt:
                    break
                weight = guidance_weight(self._guidance_scale, i, num_steps, schedule)
                self._sample_slot(state, tokens, i, conditions, weight, generator)
                generated = i + 1
                if callback is not None:
                    self._run_callback(callback, i, tokens, generated, conditions, tensor_inputs)
                if i < num_steps - 1:
                    conditions = state.step(double(tokens.bits[:, i : i + 1]))
                progress_bar.update()
        return generated

    def _sample_slot(self, state, tokens: SamplingPlan, i: int, conditions, weight: float, generator) -> None:
        """Head loop for the token at slot `i` of every row that generates it (all rows without a plan mask)."""
        guided = self.do_classifier_free_guidance
        if tokens.regenerate is None:
            tokens.bits[:, i] = sample_token(state, self.scheduler, conditions, weight, guided, generator)
            return
        rows = tokens.regenerate[:, i].nonzero()[:, 0]
        if not rows.numel():
            return
        batch = tokens.bits.shape[0]
        selected = conditions[:batch].index_select(0, rows)
        if guided:
            selected = torch.cat([selected, conditions[batch:].index_select(0, rows)])
        if isinstance(generator, (list, tuple)):  # a generator only draws for the tokens its image generates
            generator = [generator[j] for j in rows.tolist()]
        tokens.bits[rows, i] = sample_token(
            state, self.scheduler, selected, weight, guided, generator, tokens.bits[rows, i], tokens.keep
        )

    def _latents(self, tokens: SamplingPlan, pending: torch.Tensor | None = None) -> torch.Tensor:
        """Generation-order AR bits → the `output_type="latent"` layout `(B, L, num_bits)`, `MASK_BIT` where
        `pending` (generation order) is True."""
        config = self.transformer.config
        bits = tokens.bits
        if pending is not None:
            bits = bits.masked_fill(pending[:, :, None], MASK_BIT)
        if tokens.orders is not None:
            orders = tokens.orders.expand(bits.shape[0], -1)
            bits = torch.empty_like(bits).scatter_(1, orders[:, :, None].expand_as(bits), bits)
        return unpatchify_bits(bits, (config.latent_height, config.latent_width), config.patch_size)

    def _run_callback(self, callback, i, tokens: SamplingPlan, generated, conditions, tensor_inputs) -> None:
        """Call `callback_on_step_end` after AR step `i`; write back replaced `bits`, then changed `latents`."""
        bits = tokens.bits
        available = {"bits": bits[:, :generated], "conditions": conditions}
        if "latents" in tensor_inputs:
            pending = tokens.pending(generated)
            available["latents"] = self._latents(tokens, pending)
            latents_before = available["latents"].clone()
        outputs = check_callback_outputs(callback(self, i, i, {name: available[name] for name in tensor_inputs}), i)
        replaced = outputs.pop("bits", None)
        if replaced is not None and replaced is not available["bits"]:
            check_callback_bits(replaced, tuple(available["bits"].shape), i)
            bits[:, :generated] = replaced.to(bits.device, torch.long)
        elif "bits" in tensor_inputs:  # edited in place: still only 0/1 allowed
            check_callback_bits(available["bits"], tuple(available["bits"].shape), i)
        latents = outputs.pop("latents", None)
        if latents is None or "latents" not in tensor_inputs:
            return
        if isinstance(latents, torch.Tensor) and latents.shape == latents_before.shape:
            latents = latents.to(bits.device, torch.long)
            if torch.equal(latents, latents_before):
                return
            new = tokens.from_latents(latents, self.transformer.config)
            done = new[~pending]
            if ((done == 0) | (done == 1)).all() and (new[pending] == MASK_BIT).all():
                bits[~pending] = done
                return
        raise ValueError(
            f"the callback's `latents` must keep shape {tuple(latents_before.shape)}, bits in {{0, 1}} where generated "
            f"or kept and {MASK_BIT} (MASK_BIT) where not generated yet (after AR step {i})."
        )

    def _finish(self, tokens: SamplingPlan, generated: int, output_type: str, return_dict: bool, paste=None):
        """Latents (MASK_BIT where an interrupted call generated nothing yet) → the requested output type."""
        pending = None
        if generated < tokens.bits.shape[1]:
            pending = tokens.pending(generated)
            logger.warning(
                f"generation was interrupted after {generated} of {tokens.bits.shape[1]} AR steps; tokens not "
                f"generated yet are MASK_BIT ({MASK_BIT}) in `output_type='latent'` and decode as all-zero bits."
            )
        latents = self._latents(tokens, pending)
        if output_type == "latent":
            images = latents
        else:
            images = self._decode(latents.clamp(max=1), output_type, paste)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def _decode(self, latents: torch.Tensor, output_type: str, paste=None):
        """Tokenizer bits → images in [0, 1] as `output_type`; `paste` `(pixels, kept_mask)` copies kept pixels."""
        decoded = self.vqvae.decode_bits(latents).sample
        images = ((decoded.float() + 1) / 2).clamp(0, 1)
        if paste is not None:
            pixels, kept = paste
            images = torch.where(kept.to(images.device), pixels.to(images.device, images.dtype), images)
        if output_type == "pt":
            return images
        images = images.cpu().permute(0, 2, 3, 1).numpy()
        return self.numpy_to_pil(images) if output_type == "pil" else images

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | list[int | str],
        num_images_per_label: int = 1,
        guidance_scale: float | None = None,
        guidance_schedule: str | None = None,
        num_inference_steps: int | None = None,
        tokens_allocation: list[int] | None = None,
        temperature: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        cache_implementation: str = "dynamic",
    ) -> ImagePipelineOutput | tuple:
        r"""Generate images.

        Args:
            class_labels (`int`, `str` or `list`): class ids (`0..num_classes-1`) or names from `id2label` (exact, then
                case-insensitive match); numpy / torch integer arrays and DiT-style nested lists (`[[1], [1]]`) are
                flattened in row-major order.
            num_images_per_label (`int`, *optional*, defaults to 1): images per label (labels repeated in order); at
                most `max_batch_size` images per call, and the batch's estimated memory must fit the device.
            guidance_scale (`float`, *optional*): CFG scale `g` (CFG is on when `g > 1`); defaults to the value
                saved with the pipeline.
            guidance_schedule (`str`, *optional*): `"linear"` (weight `1 + (g − 1)·i/N` at AR step `i`, the
                authors') or `"constant"`; defaults to the saved value.
            num_inference_steps (`int`, *optional*): head steps per token (1..k); the scheduler derives the allocation.
            tokens_allocation (`list[int]`, *optional*): explicit bits per head step (e.g. `[2, 2, 5, 7]`).
            temperature (`float`, *optional*): base temperature `τ0`; defaults to the scheduler config.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): one generator per image makes
                image `i` independent of the batch size.
            output_type (`str`, *optional*, defaults to `"pil"`): `"pil"`, `"np"` (NHWC float in [0, 1]), `"pt"`
                (NCHW float in [0, 1]) or `"latent"` (int64 bits `(batch, latent tokens, bits per token)`, raster order,
                un-patchified).
            return_dict (`bool`, *optional*, defaults to `True`): return an `ImagePipelineOutput`.
            callback_on_step_end (`Callable`, *optional*): `fn(pipe, i, t, callback_kwargs) -> dict`, called after
                each AR step; may replace `bits` (the tokens generated so far, `(batch, i + 1, k)`) or `latents`
                (diffusers' name: all bits in the `output_type="latent"` layout `(batch, latent tokens, num_bits)`,
                `MASK_BIT` = 2 where not generated yet; after the last step it equals the `"latent"` output). Only the
                newest token is fed to the backbone: earlier edits change the decoded image, not the cached context.
                It must return a dict, and returned or edited `bits` must hold only 0/1 (checked: one device sync per
                step with a callback). Setting `pipe._interrupt = True` stops early: the output keeps its type, with
                the tokens not generated yet `MASK_BIT` in `"latent"` outputs and decoded as all-zero bits otherwise.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*): tensors passed to the callback, from
                `["bits", "conditions", "latents"]`; defaults to `["bits", "latents"]`.
            cache_implementation (`str`, *optional*, defaults to `"dynamic"`): KV cache of the backbone, one
                preallocated buffer per layer in both cases: `"dynamic"` attends to exactly the keys written so far
                (shapes grow per step) or `"static"` (the whole buffer, masked: the same shapes at every step, as
                `torch.compile` and CUDA graphs need; see [`~BARPipeline.enable_compile`]). Same outputs.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["bits", "latents"]
        labels, guidance_scale, guidance_schedule, num_inference_steps, temperature = self._check_call_inputs(
            class_labels, num_images_per_label, guidance_scale, guidance_schedule, num_inference_steps, temperature,
            generator, output_type, return_dict, callback_on_step_end, callback_on_step_end_tensor_inputs,
            cache_implementation,
        )  # fmt: skip
        self._guidance_scale, self._interrupt = float(guidance_scale), False
        device, config = self._execution_device, self.transformer.config
        self.scheduler.set_timesteps(
            num_inference_steps=num_inference_steps, tokens_allocation=tokens_allocation, temperature=temperature
        )  # step indices stay on the CPU: reading them never waits for the GPU
        class_ids = self._class_ids(labels, device)
        bits = torch.empty(len(labels), config.num_ar_steps, config.bits_per_token, dtype=torch.long, device=device)
        tokens = SamplingPlan(bits, cache_implementation=cache_implementation)
        generated = self._sample_tokens(
            tokens, class_ids, guidance_schedule, generator, callback_on_step_end, callback_on_step_end_tensor_inputs
        )
        return self._finish(tokens, generated, output_type, return_dict)

    def _class_ids(self, labels: list[int], device) -> torch.Tensor:
        """Class ids of all rows: `[labels; null class]` with guidance."""
        class_ids = torch.tensor(labels, device=device)
        if self.do_classifier_free_guidance:
            class_ids = torch.cat([class_ids, torch.full_like(class_ids, self.transformer.config.null_class_id)])
        return class_ids
