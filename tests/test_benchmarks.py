"""The sampling benchmark measures what it claims: its bare loop computes the pipeline's bits (so "pipeline overhead"
compares equal work) and its GEMM-ceiling shapes are exactly the MBM head's matrix products."""

import os
import sys

import pytest
import torch
from test_pipeline_bar import make_pipe
from test_sampling_bar import _wake
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
benchmark_sampling = pytest.importorskip("benchmark_sampling")


@pytest.mark.parametrize("patch_size", [1, 2])
def test_bare_loop_samples_the_pipelines_bits(patch_size):
    pipe = _wake(make_pipe(patch_size=patch_size), seed=3)
    labels = [1, 3, 0]
    expected = pipe(labels, generator=torch.Generator().manual_seed(7), output_type="latent").images
    with torch.no_grad():
        got = benchmark_sampling.bare_loop(pipe, labels, torch.Generator().manual_seed(7), "latent")
    assert torch.equal(got.reshape(expected.shape), expected)


def test_head_gemm_shapes_are_the_heads_flops():
    pipe = make_pipe(patch_size=2)
    config, head = pipe.transformer.config, pipe.transformer.head
    rows = 6
    states = torch.randint(0, 3, (rows, config.bits_per_token))
    ratio_embedding = head.t_embedder(torch.full((rows,), 0.5))
    conditions = torch.randn(rows, config.head_hidden_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        head.forward_embedded(states, ratio_embedding, conditions)
    shapes = benchmark_sampling.head_gemm_shapes(config)
    assert counter.get_total_flops() == sum(2 * rows * k * n for k, n in shapes)
