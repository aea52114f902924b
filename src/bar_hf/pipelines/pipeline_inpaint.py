"""`BARInpaintPipeline`: mask-guided editing with BAR (inpainting, outpainting, prefix completion, bit-level variations).

The image is encoded to bits with the tokenizer; tokens whose cell is not masked are **kept** (fed teacher-forced, bit
for bit), the others are **regenerated** by the backbone + head, then everything is decoded. The generation order is
`"kept_first"` (kept tokens first, then the regenerated ones, each group in raster order: every regenerated token sees
all kept tokens; needs a model trained with such orders) or `"raster"` (raster order, kept tokens forced: works with
any model, but a regenerated token does not see the kept tokens below / right of it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import ImagePipelineOutput
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import PipelineImageInput
from diffusers.utils import logging

from ..bits import patchify_bits
from ..masks import kept_first_orders, overlap_token_mask
from .inpaint_inputs import (
    broadcast_batch,
    check_keep_bits,
    check_order,
    prepare_images,
    prepare_masks,
)
from .pipeline_bar import BARPipeline
from .sampling import SamplingPlan

__all__ = ["BARInpaintPipeline", "default_order"]

logger = logging.get_logger(__name__)


def default_order(config) -> str:
    """`"kept_first"` when the transformer config records edit-order training (`training_orders.edit_order_ratio >
    0`, written by `examples/generator/train_bar.py --edit_order_ratio`), else `"raster"` (e.g. the authors' converted models)."""
    record = getattr(config, "training_orders", None)
    ratio = record.get("edit_order_ratio", 0) if isinstance(record, dict) else 0
    return "kept_first" if isinstance(ratio, (int, float)) and ratio > 0 else "raster"


@dataclass
class InpaintInputs:
    """Normalised inputs: pixels in [0, 1] at the model size, token masks, labels and the order."""

    pixels: torch.Tensor  # (B, C, H, W)
    regenerate: torch.Tensor  # (B, N) bool, raster order of AR tokens
    labels: list[int]
    orders: torch.Tensor  # (B, N)
    order: str
    keep: torch.Tensor | None  # (k,) bool


class BARInpaintPipeline(BARPipeline):
    r"""Mask-guided editing with BAR: regenerate the masked tokens of an image given the kept ones.

    Same components, saved layout and loading as [`BARPipeline`] (`from_pretrained` on a saved BAR pipeline folder,
    `BARInpaintPipeline.from_pipe(pipe)` to share the weights of a loaded one).

    Example:

    ```py
    >>> import torch, bar_hf
    >>> from bar_hf.masks import make_mask
    >>> pipe = bar_hf.BARInpaintPipeline.from_pretrained(bar_hf.bundled_model_path())
    >>> generator = bar_hf.BARPipeline.from_pipe(pipe)  # shares the weights
    >>> image = generator("Dress", generator=torch.Generator().manual_seed(0), output_type="pt").images  # any image
    >>> mask = make_mask("bottom_half", 32, 32)  # 1 = regenerate: prefix completion
    >>> edits = pipe(image, mask, class_labels="Dress", generator=torch.Generator().manual_seed(1)).images
    ```
    """

    # ------------------------------------------------------------------------------------------------ inputs
    @property
    def default_order(self) -> str:
        """Order used when `order=None`: see [`default_order`]."""
        return default_order(self.transformer.config)

    def prepare_inputs(self, image, mask_image, class_labels, order, keep_bits) -> InpaintInputs:
        """Validate and normalise the editing inputs (see `__call__`)."""
        config = self.transformer.config
        order = check_order(order) or self.default_order
        keep = check_keep_bits(keep_bits, config.bits_per_token)
        size = tuple(s * self.vqvae.config.patch_size for s in self.vqvae.grid_size)
        pixels, input_size = prepare_images(image, self.vqvae.config.in_channels, size)
        masks = prepare_masks(mask_image, input_size, size)
        labels = self._resolve_labels(class_labels)
        batch = broadcast_batch(image=pixels.shape[0], mask_image=masks.shape[0], class_labels=len(labels))
        grid = (config.latent_height // config.patch_size, config.latent_width // config.patch_size)
        regenerate = overlap_token_mask(masks, grid).expand(batch, -1)
        pixels, labels = pixels.expand(batch, -1, -1, -1), labels * (batch // len(labels))
        if order == "kept_first":
            orders = kept_first_orders(regenerate)
            if default_order(config) != "kept_first" and not getattr(self, "_warned_order", False):
                self._warned_order = True  # once per pipeline
                logger.warning(
                    "order='kept_first' on a model whose config records no edit-order training "
                    "(`training_orders.edit_order_ratio`): completions may ignore the kept tokens; 'raster' is safer."
                )
        else:
            orders = torch.arange(regenerate.shape[1]).expand(batch, -1)
        return InpaintInputs(pixels, regenerate, labels, orders, order, keep)

    @torch.no_grad()
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] `(B, C, H, W)` → AR bits `(B, N, k)` (raster order) with the tokenizer."""
        config = self.transformer.config
        images = (pixels * 2 - 1).to(self.vqvae.device, self.vqvae.dtype)
        bits = self.vqvae.encode_to_bits(images)
        return patchify_bits(bits, (config.latent_height, config.latent_width), config.patch_size)

    # ------------------------------------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        image: PipelineImageInput,
        mask_image: PipelineImageInput,
        class_labels: int | str | list[int | str],
        order: str | None = None,
        keep_bits: int | list[bool] | torch.Tensor | None = None,
        paste_back: bool = True,
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
        r"""Regenerate the masked part of images.

        Args:
            image (PIL image, `np.ndarray`, `torch.Tensor` or a list of them): the images to edit. Arrays are
                `(H, W)`, `(H, W, C)` or `(B, H, W, C)` (numpy) and `(C, H, W)` or `(B, C, H, W)` (torch), float in
                [0, 1] (the `"np"` / `"pt"` outputs of the pipelines), uint8 or uint16 (rescaled by their range; PIL
                16-bit `I;16` / `I` and float `F` images too); 1 or 3 channels (converted to the
                model's). An image of the model's size is used as it is, one with the model's aspect ratio is resized
                (bicubic), other sizes are rejected.
            mask_image (PIL image, `np.ndarray`, `torch.Tensor` or a list of them): 1 / white = regenerate, 0 / black
                = keep; `(H, W)`, `(B, H, W)`, `(B, 1, H, W)` (torch) or `(H, W, 1)` / `(B, H, W, 1)` (numpy); float in
                [0, 1], uint8, uint16, bool or integer 0/1; the size of `image` as given or the model's size. Soft masks are binarised at 0.5 and an AR
                token is regenerated when any pixel overlapping its cell is masked (`bar_hf.masks.overlap_token_mask`);
                `bar_hf.masks.make_mask` builds the common ones.
            class_labels (`int`, `str` or `list`): class of each completion (ids or names as in [`BARPipeline`]).
                `image`, `mask_image` and `class_labels` each give 1 entry (used for every image) or B entries.
            order (`str`, *optional*): `"kept_first"` (kept tokens teacher-forced first, then the regenerated ones in
                raster order: every regenerated token sees all kept ones; for models trained with edit orders) or
                `"raster"` (raster order with kept tokens forced: any model, but a regenerated token only sees the
                kept tokens above / left of it). Defaults to [`~BARInpaintPipeline.default_order`]: `"kept_first"`
                when the transformer config records `training_orders.edit_order_ratio > 0`, else `"raster"`.
            keep_bits (`int` or boolean mask of length k, *optional*): bit-level edit: copy these bits of every
                regenerated AR token from the source image and let the head sample the others (an int `j` keeps the
                first `j` bits in the head's bit order). BAR bits carry no significance order (binary FSQ channels),
                so which bits preserve the layout best is model-specific. The MBM head is told the true fraction of
                masked bits; the linear head conditions exactly on the kept bits; the bitwise head predicts bits
                independently, so kept bits are simply fixed.
            paste_back (`bool`, *optional*, defaults to `True`): copy the input pixels of every kept AR token cell into
                the decoded image (the decoder redraws kept tokens only approximately). Ignored for
                `output_type="latent"`.
            guidance_scale, guidance_schedule, num_inference_steps, tokens_allocation, temperature: as in
                [`BARPipeline`]; the CFG weight ramps over the generation steps (slots) of the chosen order.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): one generator per image makes image
                `i` independent of the batch (a generator only draws for the tokens its image regenerates).
            output_type (`str`, *optional*, defaults to `"pil"`): `"pil"`, `"np"`, `"pt"` (images in [0, 1]) or
                `"latent"` (int64 bits `(B, latent tokens, bits per token)`, raster order, un-patchified): kept tokens
                are exactly the encoded image's bits.
            return_dict (`bool`, *optional*, defaults to `True`): return an `ImagePipelineOutput`.
            callback_on_step_end (`Callable`, *optional*): `fn(pipe, i, t, callback_kwargs) -> dict` after each AR
                step that is not part of the teacher-forced prefix all rows share. `bits`: tokens `(B, i + 1, k)` in
                generation order (may be replaced by 0/1 bits of that shape); `conditions`; `latents`: the
                `output_type="latent"` layout, kept tokens and generated ones as bits, `MASK_BIT` where not generated
                yet (may be replaced under the same rule). `pipe._interrupt = True` stops early: the output keeps its
                type, tokens not generated yet are `MASK_BIT` in `"latent"` outputs and decode as all-zero bits.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*): from `["bits", "conditions", "latents"]`;
                defaults to `["bits", "latents"]`.
            cache_implementation (`str`, *optional*, defaults to `"dynamic"`): as in [`BARPipeline`].
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        tensor_inputs = callback_on_step_end_tensor_inputs or ["bits", "latents"]
        if not isinstance(paste_back, (bool, np.bool_)):
            raise TypeError(f"`paste_back` must be a bool, got {paste_back!r}.")
        paste_back = bool(paste_back)
        inputs = self.prepare_inputs(image, mask_image, class_labels, order, keep_bits)
        labels, guidance_scale, schedule, num_inference_steps, temperature = self._check_call_inputs(
            inputs.labels, 1, guidance_scale, guidance_schedule, num_inference_steps, temperature, generator,
            output_type, return_dict, callback_on_step_end, tensor_inputs, cache_implementation,
        )  # fmt: skip
        self._guidance_scale, self._interrupt = float(guidance_scale), False
        device = self._execution_device
        self.scheduler.set_timesteps(
            num_inference_steps=num_inference_steps, tokens_allocation=tokens_allocation, temperature=temperature
        )
        tokens = self.sampling_plan(inputs, self.encode_image(inputs.pixels).to(device), cache_implementation)
        generated = self._sample_tokens(
            tokens, self._class_ids(labels, device), schedule, generator, callback_on_step_end, tensor_inputs
        )
        paste = (inputs.pixels, self.kept_pixel_mask(inputs.regenerate)) if paste_back else None
        return self._finish(tokens, generated, output_type, return_dict, paste)

    def sampling_plan(self, inputs: InpaintInputs, source: torch.Tensor, cache_implementation: str) -> SamplingPlan:
        """The encoded image `source` `(B, N, k)` (raster) rearranged in generation order, with the tokens to
        regenerate; raster orders and orders shared by every row are stored once."""
        orders = inputs.orders.to(source.device)
        regenerate = inputs.regenerate.to(source.device)
        if inputs.order == "raster":
            return SamplingPlan(source.clone(), None, regenerate, inputs.keep, cache_implementation)
        bits = source.gather(1, orders[:, :, None].expand(-1, -1, source.shape[2]))
        regenerate = regenerate.gather(1, orders)
        if bool((orders == orders[:1]).all()):
            orders = orders[:1]
        return SamplingPlan(bits, orders, regenerate, inputs.keep, cache_implementation)

    def kept_pixel_mask(self, regenerate: torch.Tensor) -> torch.Tensor:
        """`(B, 1, H, W)` bool: True on the pixels of kept AR tokens (the region `paste_back` copies)."""
        config = self.transformer.config
        grid = (config.latent_height // config.patch_size, config.latent_width // config.patch_size)
        height, width = (s * self.vqvae.config.patch_size for s in self.vqvae.grid_size)
        cells = (~regenerate).reshape(-1, 1, *grid)
        return cells.repeat_interleave(height // grid[0], 2).repeat_interleave(width // grid[1], 3)
