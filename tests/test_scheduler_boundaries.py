"""Scheduler boundaries: timesteps are never rounded, bit states are checked, config values are validated at
`__init__` (numpy scalars of every width alike), and a scheduler that does not fit the model is refused when assigned."""

import numpy as np
import pytest
import torch
from test_pipeline_bar import make_pipe

from bar_hf import BARAdaptiveBitScheduler, BARBitScheduler, BARLogProbBitScheduler
from bar_hf.bits import MASK_BIT

K = 6


def logits(batch=2):
    return torch.randn(batch, K, 2, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("cls", [BARBitScheduler, BARLogProbBitScheduler, BARAdaptiveBitScheduler])
def test_step_refuses_non_integral_timesteps_and_bad_states(cls):
    scheduler = cls(bits_per_token=K, num_inference_steps=3)
    states = torch.full((2, K), MASK_BIT)
    for timestep in (1.7, 0.5, float("nan"), "0", True, torch.tensor(0.5)):
        with pytest.raises(ValueError, match="`timestep` must be an integ"):
            scheduler.step(logits(), timestep, states)
    for bad, error, match in (
        (torch.full((2, K), 5), ValueError, "`sample` bit states must be 0, 1 or 2"),
        (torch.full((2, K), -1), ValueError, "`sample` bit states must be 0, 1 or 2"),
        (torch.full((2, K), 2.0), TypeError, "`sample` must hold integer bit states"),
        (np.full((2, K), 2), TypeError, "`sample` must be a torch.LongTensor"),
    ):
        with pytest.raises(error, match=match):
            scheduler.step(logits(), 0, bad)
    for timestep in (0, 0.0, np.int64(0), torch.tensor(0), torch.tensor([0])):  # integral values are fine
        assert scheduler.step(logits(), timestep, states).prev_sample.shape == (2, K)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_inference_steps=2.5, tokens_allocation=[3, 3]), "`num_inference_steps` must be an int"),
        (dict(allocation_rule=None, tokens_allocation=[3, 3]), "`allocation_rule` must be one of"),
        (dict(allocation_rule="linear"), "`allocation_rule` must be one of"),
        (dict(min_bits_per_step=K + 1), "`min_bits_per_step` \\(7\\) must be <= `bits_per_token` \\(6\\)"),
    ],
)
def test_init_refuses_bad_config_values(kwargs, match):
    cls = BARAdaptiveBitScheduler if "min_bits_per_step" in kwargs else BARBitScheduler
    with pytest.raises(ValueError, match=match):
        cls(bits_per_token=K, **kwargs)


def test_adaptive_scheduler_accepts_numpy_scalars_of_every_width(tmp_path):
    for threshold in (np.float16(0.75), np.float32(0.75), np.float64(0.75), torch.tensor(0.75)):
        for count in (np.int32(2), np.int64(2), np.uint8(2)):
            scheduler = BARAdaptiveBitScheduler(
                bits_per_token=np.int64(K), confidence_threshold=threshold, min_bits_per_step=count
            )
            assert scheduler.config.confidence_threshold == 0.75 and scheduler.config.min_bits_per_step == 2
            assert type(scheduler.config.min_bits_per_step) is int and type(scheduler.config.bits_per_token) is int
    scheduler.save_pretrained(tmp_path)  # JSON-serialisable config
    assert BARAdaptiveBitScheduler.from_pretrained(tmp_path).config.min_bits_per_step == 2


def test_a_scheduler_with_other_bits_per_token_is_refused_when_assigned():
    pipe = make_pipe()
    k = pipe.transformer.config.bits_per_token
    original = pipe.scheduler
    with pytest.raises(ValueError, match=f"\\({k + 1}\\) must equal the transformer's bits per AR step k={k}"):
        pipe.scheduler = BARBitScheduler(bits_per_token=k + 1, num_inference_steps=2)
    with pytest.raises(TypeError, match="`scheduler` must be a BARSchedulerMixin"):
        pipe.scheduler = object()
    assert pipe.scheduler is original
    pipe.scheduler = BARAdaptiveBitScheduler.from_config(original.config)
    assert isinstance(pipe.scheduler, BARAdaptiveBitScheduler)
    assert pipe.config.scheduler[1] == "BARAdaptiveBitScheduler"
