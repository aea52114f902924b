"""`enable_compile`: one compiled copy per batch shape (rows, guidance); shapes compiled once stay compiled after many
other shapes (torch's recompile limit of 8 no longer drops everything to eager); the shape cap warns once."""

import logging

import pytest
import torch
from diffusers.utils import logging as diffusers_logging
from test_pipeline_bar import gens, make_pipe

from bar_hf.pipelines import sampling


def counting_backend(compiles, runs):
    def backend(graph_module, example_inputs):
        compiles.append(graph_module)

        def run(*args):
            runs.append(1)
            return graph_module.forward(*args)

        return run

    return backend


@pytest.fixture
def pipe():
    torch._dynamo.reset()
    pipe = make_pipe()
    pipe.set_progress_bar_config(disable=True)
    yield pipe
    pipe.disable_compile()
    torch._dynamo.reset()


def test_compiled_shapes_stay_compiled_past_the_recompile_limit(pipe):
    compiles, runs = [], []
    pipe.enable_compile(backend=counting_backend(compiles, runs))
    shapes = [(n, g) for n in range(1, 6) for g in (1.0, 3.0)]  # 10 shapes: more than torch's limit of 8
    eager_first = None
    for batch, guidance in shapes:
        out = pipe(list(range(batch)), guidance_scale=guidance, generator=gens(batch), output_type="latent").images
        if eager_first is None:
            eager_first = out
    assert len(compiles) == 2 * len(shapes)  # one backbone and one head graph per shape
    before = len(runs)
    again = pipe([0], guidance_scale=1.0, generator=gens(1), output_type="latent").images
    assert torch.equal(again, eager_first)
    assert len(compiles) == 2 * len(shapes)  # nothing recompiled ...
    assert len(runs) > before  # ... and the compiled graphs ran (not eager)


def test_shape_cap_warns_once_with_the_fix(pipe, monkeypatch, caplog):
    monkeypatch.setattr(sampling, "MAX_COMPILED_SHAPES", 1)
    compiles, runs = [], []
    pipe.enable_compile(backend=counting_backend(compiles, runs))
    diffusers_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            for batch in (1, 2, 3):
                pipe(list(range(batch)), guidance_scale=1.0, generator=gens(batch), output_type="latent")
    finally:
        diffusers_logging.disable_propagation()
    assert len(compiles) == 2  # only the first shape compiled
    warnings = [r.message for r in caplog.records if "new shapes run eagerly" in r.message]
    assert len(warnings) == 2, warnings  # once per step function, not once per call
    assert "compiled shapes stay compiled" in warnings[0] and "enable_compile()" in warnings[0]
