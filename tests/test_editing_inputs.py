"""Editing inputs: one normaliser rescales every image / mask by its dtype range (8-bit, 16-bit, float PIL images,
uint8 / uint16 / float arrays and tensors) and refuses empty or malformed inputs with a ValueError / TypeError."""

import numpy as np
import pytest
import torch
from PIL import Image
from test_pipeline_bar import gens
from test_pipeline_inpaint import SIZE, inpaint, pipe  # noqa: F401 (fixtures)

from bar_hf.masks import make_mask


def edit(inpaint, image, mask=None, **kw):  # noqa: F811
    mask = make_mask("center", SIZE, SIZE) if mask is None else mask
    return inpaint(image, mask, class_labels=1, generator=gens(1), output_type="np", **kw).images


def gray(size=SIZE, seed=3):
    return np.random.default_rng(seed).integers(0, 256, (size, size)).astype(np.uint8)


@pytest.mark.parametrize("size", [SIZE, 2 * SIZE])  # as given, and resized by PIL
def test_16bit_float_and_uint8_versions_of_an_image_give_the_same_edit(inpaint, size):  # noqa: F811
    pixels = gray(size)
    reference = edit(inpaint, Image.fromarray(pixels), make_mask("center", size, size))
    mask = make_mask("center", size, size)
    versions = {
        "I;16": Image.fromarray(pixels.astype(np.uint16) * 257),
        "I": Image.fromarray(pixels.astype(np.int32) * 257, mode="I"),
        "F": Image.fromarray(pixels.astype(np.float32) / 255, mode="F"),
        "np uint16": pixels.astype(np.uint16) * 257,
        "np float": pixels.astype(np.float32) / 255,
        "pt uint8": torch.from_numpy(pixels)[None].expand(3, -1, -1),
    }
    for name, image in versions.items():
        assert not isinstance(image, Image.Image) or image.mode == name.split()[0]
        out = edit(inpaint, image, mask)
        assert np.abs(out - reference).max() <= 1 / 255 + 1e-6, name
    assert edit(inpaint, Image.fromarray(pixels)).mean() > 0.0  # sanity: not black/white


@pytest.mark.parametrize(
    "image, mask, match",
    [
        (Image.new("L", (0, 0)), None, "`image` must not be empty"),
        (np.zeros((0, 0), np.uint8), None, "`image` must not be empty"),
        (torch.zeros(3, 0, 0), None, "`image` must not be empty"),
        (None, np.zeros((0, 0)), "`mask_image` must not be empty"),
        (None, np.full((SIZE, SIZE), 3, np.int64), "`mask_image` with integer dtype torch.int64 must hold only 0/1"),
        (np.zeros((SIZE, SIZE), np.int32), None, "`image` must hold floats in \\[0, 1\\], uint8, uint16 or bool"),
        (Image.fromarray(np.full((SIZE, SIZE), 2.0, np.float32), mode="F"), None, "`image` float values must lie"),
    ],
)
def test_empty_and_out_of_range_inputs_are_refused(inpaint, image, mask, match):  # noqa: F811
    image = torch.rand(3, SIZE, SIZE) if image is None else image
    with pytest.raises((ValueError, TypeError), match=match):
        edit(inpaint, image, mask)


def test_integer_masks_hwc_masks_and_numpy_bools(inpaint):  # noqa: F811
    image = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    mask = make_mask("center", SIZE, SIZE)
    reference = edit(inpaint, image, mask)
    assert np.array_equal(edit(inpaint, image, mask.astype(np.int64)), reference)
    assert np.array_equal(edit(inpaint, image, torch.from_numpy(mask.astype(np.int32))), reference)
    assert np.array_equal(edit(inpaint, image, mask[:, :, None]), reference)  # (H, W, 1): one channel of an "np"
    assert np.array_equal(edit(inpaint, image, mask[None, :, :, None]), reference)
    assert np.array_equal(edit(inpaint, image, Image.fromarray(mask.astype(np.uint16) * 65535)), reference)
    assert np.array_equal(edit(inpaint, image, mask, paste_back=np.bool_(True)), reference)
    raw = edit(inpaint, image, mask, paste_back=False)
    assert np.array_equal(edit(inpaint, image, mask, paste_back=np.bool_(False)), raw)
    with pytest.raises(TypeError, match="`paste_back` must be a bool"):
        edit(inpaint, image, mask, paste_back=1)
