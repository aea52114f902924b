import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bar_hf.bits import bits_to_ids, ids_to_bits, patchify_bits, unpatchify_bits


@pytest.mark.parametrize("num_bits", [1, 2, 5, 10])
def test_all_codes_round_trip(num_bits):
    ids = torch.arange(2**num_bits)
    bits = ids_to_bits(ids, num_bits)
    assert bits.shape == (2**num_bits, num_bits)
    assert torch.equal(bits_to_ids(bits), ids)


def test_lsb_first():
    # id = sum_c bit_c * 2**c: channel 0 is the least significant bit
    assert bits_to_ids(torch.tensor([1, 0, 0, 0])).item() == 1
    assert bits_to_ids(torch.tensor([0, 0, 0, 1])).item() == 8
    assert ids_to_bits(torch.tensor(6), 4).tolist() == [0, 1, 1, 0]


def test_63_bits_and_64_bits():
    bits = torch.ones(63, dtype=torch.int64)
    assert bits_to_ids(bits).item() == 2**63 - 1
    assert torch.equal(ids_to_bits(bits_to_ids(bits), 63), bits)
    with pytest.raises(ValueError, match="1..63"):
        bits_to_ids(torch.ones(64, dtype=torch.int64))
    with pytest.raises(ValueError, match="num_bits"):
        ids_to_bits(torch.tensor([1]), 64)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\{0, 1\}"):
        bits_to_ids(torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="integer"):
        bits_to_ids(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\[0, 2\*\*3\)"):
        ids_to_bits(torch.tensor([8]), 3)
    with pytest.raises(ValueError, match=r"\[0, 2\*\*3\)"):
        ids_to_bits(torch.tensor([-1]), 3)
    with pytest.raises(ValueError, match="divisible"):
        patchify_bits(torch.zeros(1, 12, 2, dtype=torch.long), (3, 4), 2)
    with pytest.raises(ValueError, match="needs 16"):
        patchify_bits(torch.zeros(1, 12, 2, dtype=torch.long), (4, 4), 2)


def test_patchify_matches_authors_example():
    # docs/method.md §3.2: p=2 on a 16-wide grid: AR token 0 = latent tokens 0, 1, 16, 17 in that order.
    num_bits = 16
    tokens = torch.arange(256).view(1, 256, 1).expand(1, 256, num_bits)
    ar = patchify_bits(tokens, (16, 16), 2)
    assert ar.shape == (1, 64, 64)
    assert ar[0, 0].view(4, num_bits)[:, 0].tolist() == [0, 1, 16, 17]
    assert ar[0, 1].view(4, num_bits)[:, 0].tolist() == [2, 3, 18, 19]
    assert ar[0, 8].view(4, num_bits)[:, 0].tolist() == [32, 33, 48, 49]  # second block row
    # bits of one latent token stay contiguous and in channel order
    bit_index = torch.arange(num_bits).view(1, 1, num_bits).expand(1, 256, num_bits)
    assert patchify_bits(bit_index, (16, 16), 2)[0, 0, :num_bits].tolist() == list(range(num_bits))


@settings(max_examples=60, deadline=None)
@given(
    block_rows=st.integers(1, 4),
    block_cols=st.integers(1, 4),
    patch=st.integers(1, 4),
    num_bits=st.integers(1, 12),
    batch=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_patchify_round_trip(block_rows, block_cols, patch, num_bits, batch, seed):
    grid = (block_rows * patch, block_cols * patch)
    gen = torch.Generator().manual_seed(seed)
    bits = torch.randint(0, 2, (batch, grid[0] * grid[1], num_bits), generator=gen)
    ar = patchify_bits(bits, grid, patch)
    assert ar.shape == (batch, block_rows * block_cols, patch * patch * num_bits)
    assert torch.equal(unpatchify_bits(ar, grid, patch), bits)


@settings(max_examples=60, deadline=None)
@given(num_bits=st.integers(1, 63), seed=st.integers(0, 2**16))
def test_ids_round_trip(num_bits, seed):
    gen = torch.Generator().manual_seed(seed)
    bits = torch.randint(0, 2, (7, num_bits), generator=gen)
    ids = bits_to_ids(bits)
    assert ids.min() >= 0
    assert torch.equal(ids_to_bits(ids, num_bits), bits)
