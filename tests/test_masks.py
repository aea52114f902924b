import numpy as np
import pytest
import torch

from bar_hf.masks import MASK_NAMES, kept_first_orders, make_mask, random_token_masks, token_mask


@pytest.mark.parametrize("name", MASK_NAMES)
def test_named_masks_are_binary_and_nontrivial(name):
    mask = make_mask(name, 32, 32, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (32, 32) and mask.dtype == np.float32
    assert set(np.unique(mask).tolist()) == {0.0, 1.0}


def test_prefix_completion_and_outpaint_shapes():
    bottom = make_mask("bottom_half", 8, 8)
    assert bottom[:4].sum() == 0 and bottom[4:].all()
    outpaint = make_mask("outpaint", 8, 8)
    assert outpaint[2:6, 2:6].sum() == 0 and outpaint.sum() == 64 - 16
    np.testing.assert_array_equal(make_mask("center", 8, 8), 1 - outpaint)


def test_make_mask_validation_names_argument():
    with pytest.raises(ValueError, match="`name`"):
        make_mask("middle", 8, 8)
    with pytest.raises(ValueError, match="`height`"):
        make_mask("center", 0, 8)


def test_token_mask_any_pixel_rule_and_soft_binarisation():
    mask = torch.zeros(1, 8, 8)
    mask[0, 0, 0] = 0.6  # one soft pixel above 0.5 regenerates its whole 4x4 cell
    mask[0, 7, 7] = 0.4  # below 0.5: kept
    assert token_mask(mask, (2, 2)).tolist() == [[True, False, False, False]]
    assert token_mask(mask[:, None], (2, 2)).shape == (1, 4)
    with pytest.raises(ValueError, match="multiple of the token grid"):
        token_mask(torch.zeros(1, 7, 8), (2, 2))


def test_kept_first_orders_are_permutations_with_kept_tokens_first():
    regenerate = random_token_masks(64, (4, 4), generator=torch.Generator().manual_seed(1))
    orders = kept_first_orders(regenerate)
    assert torch.equal(orders.sort(-1).values, torch.arange(16).expand(64, 16))
    ordered = regenerate.gather(1, orders)
    assert torch.equal(ordered, ordered.long().sort(dim=-1, stable=True).values.bool())  # False (kept) then True
    for row, order in zip(regenerate, orders):  # raster inside each group
        for group in (order[~row[order]], order[row[order]]):
            assert torch.equal(group, group.sort().values)
    raster = torch.arange(16).expand(2, 16)
    assert torch.equal(kept_first_orders(torch.tensor([[False] * 16, [True] * 16])), raster)


def test_random_token_masks_are_seeded_and_varied():
    a = random_token_masks(200, (8, 8), generator=torch.Generator().manual_seed(3))
    b = random_token_masks(200, (8, 8), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    fractions = a.float().mean(1)
    assert 0.1 < fractions.mean() < 0.9 and fractions.std() > 0.1
