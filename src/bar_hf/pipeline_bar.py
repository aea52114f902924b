"""`BARPipeline`: class labels → bits (AR backbone + scheduler-driven MBM head) → images (BAR_METHOD §4.4)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import logging
from transformers.cache_utils import DynamicCache, StaticCache

from .bits import MASK_BIT, unpatchify_bits
from .hub_utils import push_pipeline_to_hub, write_remote_code_shims
from .modeling_bar import BARForCausalImageModeling
from .scheduling_bar import BARSchedulerMixin
from .vq_model_bar import BARVQModel

__all__ = ["BARPipeline", "guidance_weight"]

logger = logging.get_logger(__name__)

_GUIDANCE_SCHEDULES = ("linear", "constant")


def guidance_weight(guidance_scale: float, step: int, num_steps: int, schedule: str = "linear") -> float:
    """CFG weight of AR step `step`: `1 + (g − 1)·i/N` ("linear", the authors') or `g` ("constant")."""
    if schedule == "linear":
        return 1 + (guidance_scale - 1) * step / num_steps
    if schedule == "constant":
        return guidance_scale
    raise ValueError(f"`guidance_schedule` must be one of {_GUIDANCE_SCHEDULES}, got {schedule!r}.")


class BARPipeline(DiffusionPipeline):
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
    _callback_tensor_inputs = ["bits", "conditions"]

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
        if scheduler.config.bits_per_token != transformer.config.bits_per_step:
            raise ValueError(
                f"`scheduler.config.bits_per_token` ({scheduler.config.bits_per_token}) must equal the transformer's "
                f"bits per AR step k={transformer.config.bits_per_step}."
            )
        if guidance_schedule not in _GUIDANCE_SCHEDULES:
            raise ValueError(f"`guidance_schedule` must be one of {_GUIDANCE_SCHEDULES}, got {guidance_schedule!r}.")
        self.register_modules(vqvae=vqvae, transformer=transformer, scheduler=scheduler)
        if id2label is not None:
            id2label = {int(k): str(v) for k, v in id2label.items()}
            bad = [k for k in id2label if not 0 <= k < transformer.config.num_classes]
            if bad:
                raise ValueError(
                    f"`id2label` keys must be class ids in [0, {transformer.config.num_classes}), got {bad[:5]}."
                )
        self.register_to_config(
            id2label={str(k): v for k, v in id2label.items()} if id2label else None,
            guidance_scale=float(guidance_scale),
            guidance_schedule=guidance_schedule,
        )
        self.labels = {}
        for key, names in (id2label or {}).items():
            for name in names.split(","):
                self.labels[name.strip()] = key
        self.labels = dict(sorted(self.labels.items()))

    # ------------------------------------------------------------------------------------------------ labels
    @property
    def id2label(self) -> dict[int, str]:
        return {int(k): v for k, v in (self.config.id2label or {}).items()}

    def get_label_ids(self, label: str | list[str]) -> list[int]:
        """Map class names (any comma-separated synonym of `id2label`) to ids."""
        labels = [label] if isinstance(label, str) else list(label)
        ids = []
        for name in labels:
            if name not in self.labels:
                known = ", ".join(list(self.labels)[:20])
                raise ValueError(f"`{name}` is not a known class name. Known names include: {known}.")
            ids.append(self.labels[name])
        return ids

    def _resolve_labels(self, class_labels) -> list[int]:
        if isinstance(class_labels, (int, str, np.integer)):
            class_labels = [class_labels]
        if isinstance(class_labels, torch.Tensor):
            class_labels = class_labels.flatten().tolist()
        if not isinstance(class_labels, (list, tuple)) or len(class_labels) == 0:
            raise ValueError(f"`class_labels` must be a non-empty list of class ids or names, got {class_labels!r}.")
        num_classes = self.transformer.config.num_classes
        ids = []
        for label in class_labels:
            if isinstance(label, str):
                if label.strip().lstrip("-").isdigit():
                    label = int(label)
                else:
                    ids.extend(self.get_label_ids(label))
                    continue
            if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
                raise ValueError(f"`class_labels` entries must be ints or names, got {label!r}.")
            if not 0 <= int(label) < num_classes:
                raise ValueError(f"class label {int(label)} is out of range: ids must be in [0, {num_classes}).")
            ids.append(int(label))
        return ids

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

    def check_inputs(self, guidance_scale, generator, batch_size, output_type, callback_tensor_inputs) -> None:
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) or guidance_scale < 0:
            raise ValueError(f"`guidance_scale` must be a number >= 0, got {guidance_scale!r}.")
        if isinstance(generator, (list, tuple)) and len(generator) != batch_size:
            raise ValueError(
                f"`generator` is a list of {len(generator)} generators but {batch_size} images are requested; pass "
                "one generator per image."
            )
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"`output_type` must be one of 'pil', 'np', 'pt', 'latent', got {output_type!r}.")
        if callback_tensor_inputs is not None:
            unknown = [k for k in callback_tensor_inputs if k not in self._callback_tensor_inputs]
            if unknown:
                raise ValueError(
                    f"`callback_on_step_end_tensor_inputs` must be a subset of {self._callback_tensor_inputs}, "
                    f"got unknown {unknown}."
                )

    # ------------------------------------------------------------------------------------------------ sampling
    def _sample_token(self, conditions, weight, batch_size, generator) -> torch.Tensor:
        """Run the scheduler-driven head steps for one AR token; `conditions` is `[cond; uncond]` with CFG."""
        k = self.transformer.config.bits_per_step
        device = conditions.device
        states = torch.full((batch_size, k), MASK_BIT, dtype=torch.long, device=device)
        for t in self.scheduler.timesteps:
            ratio = self.scheduler.head_mask_ratio(t, states)
            if self.do_classifier_free_guidance:
                ratio = torch.cat([ratio, ratio])
            head_states = torch.cat([states, states]) if self.do_classifier_free_guidance else states
            logits = self.transformer.head_logits(head_states, ratio, conditions, validate_inputs=False).float()
            if self.do_classifier_free_guidance:
                cond, uncond = logits.chunk(2)
                logits = uncond + weight * (cond - uncond)
            states = self.scheduler.step(logits, t, states, generator=generator).prev_sample
            if self.scheduler.supports_early_stop and self.scheduler.is_finished(states):
                break  # every row revealed: skip the remaining head calls (one device-to-host read per step)
        return states

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
            class_labels (`int`, `str` or `list`): class ids (`0..num_classes-1`) or names from `id2label`.
            num_images_per_label (`int`, *optional*, defaults to 1): images per label (labels repeated in order).
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
                each AR step; may replace `bits` (the tokens generated so far, `(batch, i + 1, k)`; only the newest
                token is fed to the backbone, earlier edits change the decoded image, not the cached context). Setting
                `pipe._interrupt = True` stops early and returns the AR tokens generated so far instead of images.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*): tensors passed to the callback, from
                `["bits", "conditions"]`.
            cache_implementation (`str`, *optional*, defaults to `"dynamic"`): KV cache of the backbone:
                `"dynamic"` (transformers' `DynamicCache`, grows by concatenation) or `"static"` (`StaticCache`, one
                buffer for the whole sequence, masked; avoids the quadratic copies of long sequences). Same outputs.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["bits"]
        if (
            isinstance(num_images_per_label, bool)
            or not isinstance(num_images_per_label, int)
            or num_images_per_label < 1
        ):
            raise ValueError(f"`num_images_per_label` must be a positive int, got {num_images_per_label!r}.")
        labels = [label for label in self._resolve_labels(class_labels) for _ in range(num_images_per_label)]
        batch_size = len(labels)
        guidance_scale = self.config.guidance_scale if guidance_scale is None else guidance_scale
        guidance_schedule = guidance_schedule or self.config.guidance_schedule
        self.check_inputs(guidance_scale, generator, batch_size, output_type, callback_on_step_end_tensor_inputs)
        guidance_weight(guidance_scale, 0, 1, guidance_schedule)  # validates the schedule name
        if cache_implementation not in ("dynamic", "static"):
            raise ValueError(f"`cache_implementation` must be 'dynamic' or 'static', got {cache_implementation!r}.")

        self._guidance_scale = float(guidance_scale)
        self._interrupt = False
        device = self._execution_device
        config = self.transformer.config
        self.scheduler.set_timesteps(
            num_inference_steps=num_inference_steps,
            tokens_allocation=tokens_allocation,
            temperature=temperature,
        )  # step indices stay on the CPU: reading them never waits for the GPU
        num_steps = config.num_ar_steps
        self._num_timesteps = num_steps

        class_ids = torch.tensor(labels, device=device)
        if self.do_classifier_free_guidance:
            class_ids = torch.cat([class_ids, torch.full_like(class_ids, config.null_class_id)])
        if cache_implementation == "static":  # one buffer for the whole sequence: no per-step concatenation
            cache = StaticCache(config=config, max_cache_len=config.prefix_length + num_steps)
        else:
            cache = DynamicCache()
        conditions = self.transformer.compute_conditions(None, class_ids, cache=cache).conditions[:, -1]
        # generated tokens are written into one preallocated buffer (no quadratic re-concatenation)
        bits = torch.empty(batch_size, num_steps, config.bits_per_step, dtype=torch.long, device=device)
        generated = 0

        with self.progress_bar(total=num_steps) as progress_bar:
            for i in range(num_steps):
                if self.interrupt:
                    break
                weight = guidance_weight(self._guidance_scale, i, num_steps, guidance_schedule)
                bits[:, i] = self._sample_token(conditions, weight, batch_size, generator)
                generated = i + 1
                if callback_on_step_end is not None:
                    available = {"bits": bits[:, :generated], "conditions": conditions}
                    callback_kwargs = {name: available[name] for name in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, i, callback_kwargs)
                    replaced = callback_outputs.pop("bits", None)
                    if replaced is not None and replaced is not available["bits"]:
                        bits[:, :generated] = replaced
                if i < num_steps - 1:
                    step_input = bits[:, i : i + 1]
                    if self.do_classifier_free_guidance:
                        step_input = torch.cat([step_input, step_input])
                    conditions = self.transformer.compute_conditions(
                        step_input, class_ids, cache=cache, validate_inputs=False
                    ).conditions[:, -1]
                progress_bar.update()

        if generated < num_steps:  # interrupted (`pipe._interrupt = True` in a callback): no full image exists
            logger.warning(
                f"generation was interrupted after {generated} of {num_steps} AR steps; returning the generated "
                "AR tokens (batch, steps, k) in generation order instead of images."
            )
            self.maybe_free_model_hooks()
            partial = bits[:, :generated]
            return (partial,) if not return_dict else ImagePipelineOutput(images=partial)
        latent_bits = unpatchify_bits(bits, (config.latent_height, config.latent_width), config.patch_size)
        if output_type == "latent":
            images = latent_bits
        else:
            decoded = self.vqvae.decode_bits(latent_bits).sample
            images = ((decoded.float() + 1) / 2).clamp(0, 1)
            if output_type != "pt":
                images = images.cpu().permute(0, 2, 3, 1).numpy()
                if output_type == "pil":
                    images = self.numpy_to_pil(images)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    # ------------------------------------------------------------------------------------------------ hub
    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        variant: str | None = None,
        max_shard_size: int | str | None = None,
        push_to_hub: bool = False,
        remote_code: bool = False,
        **kwargs,
    ) -> None:
        """Save the pipeline in the canonical layout (load it with `BARPipeline.from_pretrained`).

        Args:
            save_directory (`str` or `os.PathLike`): target folder (created if missing).
            safe_serialization, variant, max_shard_size: as in `DiffusionPipeline.save_pretrained`.
            push_to_hub (`bool`, *optional*, defaults to `False`): then upload with [`~BARPipeline.push_to_hub`]
                (BAR model card, not diffusers' generic one); `repo_id` defaults to the folder name and `token`,
                `private`, `commit_message`, `create_pr`, `license`, `base_model`, `extra_tags`, `endpoint` are
                forwarded.
            remote_code (`bool`, *optional*, defaults to `False`): also write the one-line re-export files
                (`bar_hf.hub_utils.write_remote_code_shims`) so that plain
                `DiffusionPipeline.from_pretrained(folder_or_repo, trust_remote_code=True)` works for users who have
                `bar_hf` installed (`BARPipeline.from_pretrained` then needs `trust_remote_code=True` too).
        """
        push_keys = (
            "repo_id",
            "token",
            "private",
            "commit_message",
            "create_pr",
            "license",
            "base_model",
            "extra_tags",
            "endpoint",
        )
        push_kwargs = {key: kwargs.pop(key) for key in push_keys if key in kwargs}
        super().save_pretrained(
            save_directory,
            safe_serialization=safe_serialization,
            variant=variant,
            max_shard_size=max_shard_size,
            **kwargs,
        )
        if remote_code:
            write_remote_code_shims(save_directory, type(self))
        if push_to_hub:
            repo_id = push_kwargs.pop("repo_id", None) or os.path.basename(os.path.normpath(save_directory))
            self.push_to_hub(
                repo_id, safe_serialization=safe_serialization, variant=variant, remote_code=remote_code, **push_kwargs
            )

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: str | None = None,
        subfolder: str | None = None,
        *,
        remote_code: bool = False,
        license: str = "apache-2.0",
        base_model: str | list[str] | None = None,
        extra_tags: Iterable[str] = (),
        endpoint: str | None = None,
    ):
        """Upload the pipeline (all components, `model_index.json`) with a BAR model card in one commit.

        Same positional arguments as diffusers' `push_to_hub`; the README shows `BARPipeline` usage, the sampling
        defaults, license and tags (see `bar_hf.hub_utils.bar_model_card`) instead of diffusers' generic card.

        Args:
            repo_id (`str`): target repo (`"org/name"`), created if missing.
            commit_message, private, token, create_pr, variant: as in diffusers' `push_to_hub`.
            safe_serialization (`bool`, *optional*, defaults to `True`): must be `True` (safetensors only).
            subfolder (`str`, *optional*): not supported for pipelines, must be `None`.
            remote_code (`bool`, *optional*, defaults to `False`): also upload the `trust_remote_code` re-export files.
            license, base_model, extra_tags: model card metadata (`bar_model_card`).
            endpoint (`str`, *optional*): Hub endpoint; defaults to `HF_ENDPOINT` / huggingface.co.

        Returns:
            `huggingface_hub.CommitInfo` of the upload.
        """
        if not safe_serialization:
            raise ValueError(
                "`safe_serialization` must be True: BAR pipelines are pushed as safetensors only, got False."
            )
        if subfolder is not None:
            raise ValueError(f"`subfolder` is not supported when pushing a whole pipeline, got {subfolder!r}.")
        return push_pipeline_to_hub(
            self,
            repo_id,
            token=token,
            private=private,
            commit_message=commit_message,
            remote_code=remote_code,
            endpoint=endpoint,
            create_pr=create_pr,
            variant=variant,
            license=license,
            base_model=base_model,
            extra_tags=extra_tags,
        )

    @classmethod
    def download(cls, pretrained_model_name, **kwargs) -> str:
        """Download a pipeline repo with `huggingface_hub.snapshot_download` (diffusers' own `download` refuses
        component libraries that are not diffusers modules). Local folders are returned as they are."""
        if os.path.isdir(pretrained_model_name):
            return pretrained_model_name
        from huggingface_hub import snapshot_download

        allowed = {"cache_dir", "revision", "token", "local_files_only", "force_download"}
        options = {k: v for k, v in kwargs.items() if k in allowed and v is not None}
        return snapshot_download(
            pretrained_model_name,
            allow_patterns=[
                "model_index.json",
                "*.json",
                "*/*.json",
                "*/*.safetensors",
                "*.safetensors",
                "README.md",
                "*.py",
                "*/*.py",  # remote-code re-export files (downloading them does not run them)
            ],
            **options,
        )
