"""Randomized argument fuzzing: every pipeline call / scheduler operation either succeeds with a valid
output or raises `ValueError` / `TypeError` naming the offending argument. No other exception, no silent garbage.

Derandomized (a fixed seed, no example database) so CI is reproducible; 700 pipeline calls + 2 × 250 scheduler
operations on a very small model (2×2 latent grid, 3 bits per token), then about 960 more calls: 300 editing calls
(image / mask types, dtypes, sizes, orders, keep_bits), LoRA load / set / fuse / unload / call sequences with good
and bad adapters, and casting / compile / dtype / save toggles; after every refused call the pipeline (weights,
adapters, hooks, dtype, compile state) must be unchanged. `test_fuzz_counts_report` prints the counts (`-s`).
"""

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from bar_hf import (
    BARBitScheduler,
    BARConfig,
    BARForCausalImageModeling,
    BARLogProbBitScheduler,
    BARPipeline,
    BARVQModel,
)

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
NUM_CLASSES, NUM_BITS, SIZE = 4, 3, 8


def tiny_components() -> dict:
    """Seeded tiny tokenizer, generator and scheduler shared by the fuzzed pipelines."""
    torch.manual_seed(0)
    vqvae = BARVQModel(
        sample_size=SIZE, patch_size=4, num_bits=NUM_BITS, encoder_hidden_size=8, encoder_num_layers=1,
        encoder_num_heads=2, encoder_intermediate_size=8, encoder_num_position_embeddings=4, decoder_hidden_size=8,
        decoder_num_layers=1, decoder_num_heads=2, decoder_intermediate_size=8,
    ).eval()  # fmt: skip
    config = BARConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, latent_height=2, latent_width=2,
        num_bits=NUM_BITS, num_classes=NUM_CLASSES, num_class_tokens=1, head_hidden_size=8, head_num_layers=1,
        head_fourier_size=4,
    )  # fmt: skip
    return dict(
        vqvae=vqvae,
        transformer=BARForCausalImageModeling(config).eval(),
        scheduler=BARBitScheduler(bits_per_token=NUM_BITS, num_inference_steps=2),
    )


@pytest.fixture(scope="module")
def pipe():
    pipe = BARPipeline(
        **tiny_components(),
        id2label={0: "ant, Alpha", 1: "bee", 2: "Bee", 3: "cat"},  # "BEE" is ambiguous, "bee" / "Bee" exact
        guidance_scale=2.0,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------------------------- strategies
def _scalar_variants(values):
    """Python numbers plus numpy / torch scalar wrappers of them."""
    return st.one_of(
        st.sampled_from(values),
        st.sampled_from(values).map(lambda v: np.float32(v) if isinstance(v, float) else np.int64(v)),
        st.sampled_from(values).map(torch.tensor),
    )


single_label = st.one_of(
    st.integers(-2, NUM_CLASSES + 1),
    st.sampled_from(["ant", "ALPHA", "bee", "Bee", "BEE", "cat", " Cat ", "dog", "", "2", "-1", "9"]),
    st.sampled_from([1.0, True, None, b"ant", 1 + 0j]),
    st.integers(0, NUM_CLASSES - 1).map(np.int64),
    st.integers(0, NUM_CLASSES - 1).map(torch.tensor),
)
label_list = st.lists(single_label, min_size=0, max_size=3)
class_labels = st.one_of(
    single_label,
    label_list,
    st.lists(label_list, max_size=2),  # DiT-style nested lists
    st.lists(st.integers(-1, NUM_CLASSES), min_size=0, max_size=3).map(np.array),
    st.lists(st.integers(0, NUM_CLASSES - 1), min_size=1, max_size=3).map(lambda v: torch.tensor(v)[:, None]),
    st.lists(st.floats(0, 3), min_size=1, max_size=2).map(np.array),
    st.sampled_from([set(), {1: 2}, object()]),
)
numbers_any = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    _scalar_variants([0.0, 0.5, 1.0, 2.0, 4.0, 0, 3]),
    st.sampled_from(["2", True, [1.0], float("nan"), -float("inf")]),
)
counts = st.one_of(
    _scalar_variants([1, 2]),
    st.sampled_from([0, -1, 1.0, 1.5, "2", True, None, 10**6]),
)
steps = st.one_of(st.none(), st.integers(-1, NUM_BITS + 1), _scalar_variants([1, 2, 3]), st.sampled_from([2.0, "2"]))
allocations = st.one_of(
    st.none(),
    st.lists(st.integers(-1, 3), min_size=0, max_size=4),
    st.lists(st.integers(1, 3), min_size=1, max_size=3).map(np.array),
    st.sampled_from(["[1, 2]", [1.0, 2.0], [True, 2], 3]),
)
tensor_inputs = st.one_of(
    st.none(), st.sampled_from([["bits"], ["bits", "conditions"], ["conditions"], ["latents"], "bits", 5, []])
)


@st.composite
def callbacks(draw):
    kind = draw(
        mostly(
            st.sampled_from(["none", "none", "identity", "replace", "inplace", "drop"]),
            st.sampled_from(["return_none", "reshape", "float", "replace", "inplace"]),
        )
    )
    value = draw(mostly(st.integers(0, 1), st.integers(-1, 7)))
    if kind == "none":
        return None, kind, value

    def callback(p, i, t, kwargs):
        bits = kwargs.get("bits")
        if kind == "return_none":
            return None
        if bits is not None and kind == "replace":
            kwargs["bits"] = torch.full_like(bits, value)
        elif bits is not None and kind == "inplace":
            bits[:, -1] = value
        elif bits is not None and kind == "reshape":
            kwargs["bits"] = bits[:, :, :1]
        elif bits is not None and kind == "float":
            kwargs["bits"] = bits.float()
        elif kind == "drop":
            return {}
        return kwargs

    return callback, kind, value


def generators(batch_hint):
    return st.one_of(
        st.none(),
        st.integers(0, 3).map(lambda s: torch.Generator().manual_seed(s)),
        st.integers(0, 4).map(lambda n: [torch.Generator().manual_seed(i) for i in range(n)]),
        st.sampled_from([0, [None], "seed"]),
    )


def mostly(valid, invalid):
    """Valid values 9 times in 10: with 13 arguments a good share of calls succeed and every invalid kind is hit."""
    return st.integers(0, 9).flatmap(lambda r: invalid if r == 5 else valid)  # 5: not a boundary hypothesis favours


def tagged(valid, invalid):
    """As `mostly`, drawing `(value, drawn_from_valid)` so the test knows which arguments may be the offending ones."""
    return st.integers(0, 9).flatmap(
        lambda r: invalid.map(lambda v: (v, False)) if r == 5 else valid.map(lambda v: (v, True))
    )


valid_label = st.one_of(
    st.integers(0, NUM_CLASSES - 1),
    st.sampled_from(["ant", "ALPHA", " Alpha ", "bee", "Bee", "cat", "CAT", "2"]),
    st.integers(0, NUM_CLASSES - 1).map(np.int64),
    st.integers(0, NUM_CLASSES - 1).map(torch.tensor),
)
p_labels = tagged(
    st.one_of(
        valid_label,
        st.lists(valid_label, min_size=1, max_size=2),
        st.lists(st.lists(valid_label, min_size=1, max_size=1), min_size=1, max_size=2),  # DiT-style nested
        st.lists(st.integers(0, NUM_CLASSES - 1), min_size=1, max_size=2).map(np.array),
        st.lists(st.integers(0, NUM_CLASSES - 1), min_size=1, max_size=2).map(lambda v: torch.tensor(v)[:, None]),
    ),
    class_labels,
)
p_count = tagged(_scalar_variants([1, 2]), st.sampled_from([0, -1, 1.5, "2", True, None, 10**6]))
p_guidance = tagged(
    st.one_of(st.none(), st.floats(0, 6), _scalar_variants([0.0, 1.0, 3.0, 2])),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), -1.0, "2", True, [1.0], np.float32("nan")]),
)
p_schedule = tagged(st.sampled_from([None, "linear", "constant"]), st.sampled_from(["", "cosine", 1, "LINEAR"]))
p_steps = tagged(
    st.one_of(st.none(), st.integers(1, NUM_BITS), _scalar_variants([1, 2])), st.sampled_from([0, 4, -1, 2.0, "2"])
)
p_alloc = tagged(
    st.sampled_from([None, None, [1, 2], [3], [1, 1, 1], (1, 2)]).map(lambda v: v),
    st.one_of(st.sampled_from([[2, 1], [], [0, 3], [1.0, 2.0], "[1, 2]", 3, [1, 1]]), allocations),
)
p_temperature = tagged(
    st.one_of(st.none(), st.floats(0, 3), _scalar_variants([0.0, 1.0, 2])),
    st.sampled_from([float("nan"), float("inf"), -1.0, "1", True]),
)
p_generator = tagged(
    st.sampled_from([None, "single", "per_image"]),
    st.sampled_from([0, [None], "seed", "short_list", "long_list"]),
)
p_output = tagged(st.sampled_from(["latent", "latent", "np", "pt", "pil"]), st.sampled_from(["jpeg", None, "PIL"]))
p_return = tagged(st.booleans(), st.sampled_from([1, None, "yes"]))
p_cache = tagged(st.sampled_from(["dynamic", "static"]), st.sampled_from(["paged", None, 1]))
p_inputs = tagged(
    st.sampled_from([None, ["bits"], ["bits", "conditions"], ["conditions"], []]),
    st.sampled_from([["latents"], "bits", 5, ["bits", "latents"]]),
)


def _make_generator(kind, batch):
    if kind == "single":
        return torch.Generator().manual_seed(batch)
    if kind in ("per_image", "short_list", "long_list"):
        n = batch + {"per_image": 0, "short_list": -1, "long_list": 1}[kind]
        return [torch.Generator().manual_seed(i) for i in range(max(n, 0))]
    return kind


# ---------------------------------------------------------------------------------------------------- checks
ARGUMENT_NAMES = (
    "class_labels", "num_images_per_label", "guidance_scale", "guidance_schedule", "num_inference_steps",
    "tokens_allocation", "temperature", "generator", "output_type", "return_dict", "callback_on_step_end",
    "callback_on_step_end_tensor_inputs", "cache_implementation",
)  # fmt: skip


def _named_argument(message: str) -> str | None:
    names = re.findall(r"`([a-z_]+)`", message)
    return next((n for n in names if n in ARGUMENT_NAMES), None)


def _check_output(images, kind, batch, return_dict):
    if not return_dict:
        assert isinstance(images, tuple) and len(images) == 1
        images = images[0]
    else:
        images = images.images
    if kind == "latent":
        assert images.shape == (batch, 4, NUM_BITS) and images.dtype == torch.int64
        assert set(images.unique().tolist()) <= {0, 1}
    elif kind == "pt":
        assert images.shape == (batch, 3, SIZE, SIZE) and torch.isfinite(images).all()
        assert images.min() >= 0 and images.max() <= 1
    elif kind == "np":
        assert images.shape == (batch, SIZE, SIZE, 3) and np.isfinite(images).all()
        assert images.min() >= 0 and images.max() <= 1
    else:
        assert len(images) == batch and all(isinstance(i, Image.Image) and i.size == (SIZE, SIZE) for i in images)


def _must_fail(kwargs, callback_kind, callback_value) -> bool:
    """Arguments that can never give a valid result: a success with them would be silent garbage."""
    g = kwargs.get("guidance_scale")
    if isinstance(g, float) and not math.isfinite(g):
        return True
    if kwargs.get("num_images_per_label") in (0, -1, 10**6):
        return True
    if kwargs.get("guidance_schedule") == "":
        return True
    inputs = kwargs.get("callback_on_step_end_tensor_inputs") or ["bits"]
    if callback_kind == "return_none":
        return True
    if callback_kind in ("replace", "inplace") and callback_value not in (0, 1) and "bits" in inputs:
        return True
    return False


@settings(FUZZ, max_examples=700)
@given(
    labels=p_labels,
    count=p_count,
    guidance_scale=p_guidance,
    guidance_schedule=p_schedule,
    num_inference_steps=p_steps,
    tokens_allocation=p_alloc,
    temperature=p_temperature,
    generator=p_generator,
    output_type=p_output,
    return_dict=p_return,
    cache_implementation=p_cache,
    callback=callbacks(),
    inputs=p_inputs,
)
def test_fuzz_pipeline_call(
    pipe, labels, count, guidance_scale, guidance_schedule, num_inference_steps, tokens_allocation, temperature,
    generator, output_type, return_dict, cache_implementation, callback, inputs,
):  # fmt: skip
    args = dict(
        class_labels=labels, num_images_per_label=count, guidance_scale=guidance_scale,
        guidance_schedule=guidance_schedule, num_inference_steps=num_inference_steps,
        tokens_allocation=tokens_allocation, temperature=temperature, generator=generator, output_type=output_type,
        return_dict=return_dict, cache_implementation=cache_implementation,
        callback_on_step_end_tensor_inputs=inputs,
    )  # fmt: skip
    suspects = {name for name, (_, drawn_valid) in args.items() if not drawn_valid}  # may be the offending ones
    kwargs = {name: value for name, (value, _) in args.items()}
    callback_fn, callback_kind, callback_value = callback
    if _callback_is_bad(callback_kind, callback_value, kwargs["callback_on_step_end_tensor_inputs"]):
        suspects.add("callback_on_step_end")
    if num_inference_steps[0] is not None and tokens_allocation[0] is not None:
        suspects |= {"num_inference_steps", "tokens_allocation"}  # both valid alone, they may disagree
    labels = kwargs.pop("class_labels")
    try:
        batch_hint = len(pipe._resolve_labels(labels)) * int(kwargs["num_images_per_label"])
    except (ValueError, TypeError):
        batch_hint = 1
    kwargs["generator"] = _make_generator(kwargs["generator"], min(batch_hint, 8))
    try:
        out = pipe(labels, **kwargs, callback_on_step_end=callback_fn)
    except (ValueError, TypeError) as error:
        named = _named_argument(str(error))
        assert named, f"error names no argument: {type(error).__name__}: {error}"
        assert named in suspects, f"error names `{named}`, not one of the offending {sorted(suspects)}: {error}"
        event(f"{type(error).__name__} naming `{named}`")
        return
    event(f"success ({kwargs['output_type']})")
    assert not _must_fail(kwargs, callback_kind, callback_value), f"silently accepted {kwargs}"
    batch = len(pipe._resolve_labels(labels)) * int(kwargs["num_images_per_label"])
    _check_output(out, kwargs["output_type"], batch, kwargs["return_dict"])


def _callback_is_bad(kind, value, tensor_inputs) -> bool:
    if kind == "return_none":
        return True
    receives_bits = not isinstance(tensor_inputs, list) or "bits" in (tensor_inputs or ["bits"])
    return receives_bits and (kind in ("reshape", "float") or (kind in ("replace", "inplace") and value not in (0, 1)))


# ---------------------------------------------------------------------------------------------------- scheduler
SCHEDULER_NAMES = (
    "bits_per_token", "num_inference_steps", "tokens_allocation", "temperature", "allocation_rule", "model_output",
    "sample", "timestep", "mask_ratio", "original_samples", "generator",
)  # fmt: skip


SCHEDULER_CONFIG_NAMES = (
    "bits_per_token",
    "num_inference_steps",
    "tokens_allocation",
    "temperature",
    "allocation_rule",
)
STEP_NAMES = ("model_output", "sample", "timestep", "generator")
ADD_NOISE_NAMES = ("original_samples", "mask_ratio", "generator")


def _scheduler_error(error, allowed=SCHEDULER_NAMES):
    """The error must name an argument of the operation that raised it (not any scheduler argument)."""
    names = re.findall(r"`([a-z_]+)`", str(error))
    assert any(n in allowed for n in names), f"error names none of {allowed}: {type(error).__name__}: {error}"


@settings(FUZZ, max_examples=250)
@given(
    cls=st.sampled_from([BARBitScheduler, BARLogProbBitScheduler]),
    k=st.one_of(st.integers(-1, 6), st.sampled_from([2.0, True, np.int64(4)])),
    init_steps=st.one_of(st.integers(-1, 7), st.sampled_from([np.int64(2), 2.0])),
    init_alloc=allocations,
    init_temperature=numbers_any.filter(lambda v: v is not None),
    rule=st.sampled_from(["uniform", "cosine", "linear", None]),
    steps=steps,
    alloc=allocations,
    temperature=numbers_any,
)
def test_fuzz_scheduler_config_and_schedule(
    cls, k, init_steps, init_alloc, init_temperature, rule, steps, alloc, temperature
):
    try:
        scheduler = cls(
            bits_per_token=k, num_inference_steps=init_steps, tokens_allocation=init_alloc,
            temperature=init_temperature, allocation_rule=rule,
        )  # fmt: skip
        scheduler.set_timesteps(num_inference_steps=steps, tokens_allocation=alloc, temperature=temperature)
    except (ValueError, TypeError) as error:
        _scheduler_error(error, SCHEDULER_CONFIG_NAMES)
        return
    allocation = scheduler.tokens_allocation
    assert sum(allocation) == scheduler.config.bits_per_token and min(allocation) >= 1
    assert allocation == sorted(allocation) and len(scheduler.timesteps) == len(allocation)
    assert all(math.isfinite(t) and t >= 0 for t in scheduler.temperatures)
    if alloc is None and steps is not None:
        assert len(allocation) == int(steps)


@settings(FUZZ, max_examples=250)
@given(
    cls=st.sampled_from([BARBitScheduler, BARLogProbBitScheduler]),
    k=st.integers(1, 6),
    data=st.data(),
)
def test_fuzz_scheduler_step_and_add_noise(cls, k, data):
    steps = data.draw(st.integers(1, k))
    scheduler = cls(bits_per_token=k, num_inference_steps=steps, temperature=data.draw(st.sampled_from([0.0, 1.0])))
    batch = data.draw(st.integers(0, 3))
    shape = data.draw(st.sampled_from([(batch, k, 2), (batch, k + 1, 2), (batch, k), (batch, k, 3)]))
    logits = torch.randn(shape) * data.draw(st.sampled_from([1.0, 1e30]))
    sample = torch.full(data.draw(st.sampled_from([(batch, k), (batch + 1, k)])), 2)
    timestep = data.draw(st.one_of(st.integers(-1, steps), st.sampled_from([torch.tensor(0), np.int64(0)])))
    generator = data.draw(generators(batch))
    try:
        for t in scheduler.timesteps if timestep == 0 else [timestep]:
            sample = scheduler.step(logits, t, sample, generator=generator).prev_sample
    except (ValueError, TypeError) as error:
        _scheduler_error(error, STEP_NAMES)
    else:
        assert sample.shape == (batch, k) and set(sample.unique().tolist()) <= ({0, 1} if timestep == 0 else {0, 1, 2})
    ratio = data.draw(st.one_of(st.floats(-0.5, 1.5), st.sampled_from([float("nan"), 0.0, 1.0])))
    original = torch.randint(0, 2, data.draw(st.sampled_from([(batch, k), (batch, k + 1), (k,)])))
    try:
        noisy = scheduler.add_noise(original, torch.tensor(ratio), generator=generator)
    except (ValueError, TypeError) as error:
        _scheduler_error(error, ADD_NOISE_NAMES)
    else:
        ratio = float(torch.tensor(ratio))  # what the scheduler saw (float32: a tiny negative number is -0.0)
        assert 0 <= ratio <= 1, f"mask_ratio {ratio} accepted"
        masked = (noisy == 2).sum(-1)
        assert (masked == max(1, round(k * ratio))).all() and torch.equal(noisy[noisy != 2], original[noisy != 2])


# ---------------------------------------------------------------------------------------------------- shared checks
COUNTS = {"calls": 0, "refused": 0, "internal_errors": 0, "silent_accepts": 0, "state_changes_after_refusal": 0}


def _state(pipeline) -> dict:
    """Everything a refused call must leave as it was: weights (values and dtypes), adapters, hooks, compile state,
    scheduler."""
    from bar_hf.models.layerwise_casting import layerwise_casting_dtypes
    from bar_hf.pipelines.lora import lora_layers

    layers = lora_layers(pipeline.transformer)
    return {
        "weights": {
            (name, key): (value.dtype, value.detach().float().clone())
            for name in ("transformer", "vqvae")
            for key, value in getattr(pipeline, name).state_dict().items()
        },
        "adapters": sorted(getattr(pipeline.transformer, "peft_config", None) or {}),
        "active": list(layers[0][1].active_adapters) if layers else [],
        "scales": [sorted(layer.scaling.items()) for _, layer in layers],
        "merged": [list(layer.merged_adapters) for _, layer in layers],
        "disabled": [layer.disable_adapters for _, layer in layers],
        "casting": [layerwise_casting_dtypes(pipeline.transformer), layerwise_casting_dtypes(pipeline.vqvae)],
        "compiled": getattr(pipeline, "_compiled_steps", None),
        "scheduler": pipeline.scheduler,
    }


def _same_state(a, b) -> bool:
    weights_a, weights_b = a.pop("weights"), b.pop("weights")
    same = a == b and weights_a.keys() == weights_b.keys()
    same = same and all(
        weights_a[k][0] == weights_b[k][0] and torch.equal(weights_a[k][1], weights_b[k][1]) for k in weights_a
    )
    a["weights"], b["weights"] = weights_a, weights_b
    return same


def _guarded(pipeline, call, names, suspects=None, must_fail=False):
    """Run one call: a valid result, or a ValueError / TypeError naming one of `names` (one of `suspects` when given)
    with the pipeline unchanged. Returns (ok, result)."""
    COUNTS["calls"] += 1
    before = _state(pipeline)
    try:
        result = call()
    except (ValueError, TypeError) as error:
        COUNTS["refused"] += 1
        found = [n for n in re.findall(r"`([a-z_]+)", str(error)) if n in names]
        assert found, f"error names no argument: {type(error).__name__}: {error}"
        if suspects is not None:
            assert set(found) & suspects, f"error names {found}, not one of the offending {sorted(suspects)}: {error}"
        if not _same_state(before, _state(pipeline)):
            COUNTS["state_changes_after_refusal"] += 1
            raise AssertionError(f"the pipeline changed although the call was refused: {error}") from error
        event(f"{type(error).__name__} naming `{found[0]}`")
        return False, None
    except Exception:
        COUNTS["internal_errors"] += 1
        raise
    if must_fail:
        COUNTS["silent_accepts"] += 1
        raise AssertionError("silently accepted a call that can never be valid")
    return True, result


def _assert_bits(images, batch):
    assert images.shape == (batch, 4, NUM_BITS) and images.dtype == torch.int64
    assert set(images.unique().tolist()) <= {0, 1}


# ---------------------------------------------------------------------------------------------------- editing
EDIT_NAMES = (
    "image", "mask_image", "class_labels", "order", "keep_bits", "paste_back", "generator", "output_type",
    "num_inference_steps", "tokens_allocation", "temperature", "guidance_scale",
)  # fmt: skip


@pytest.fixture(scope="module")
def edit_pipe(pipe):
    from bar_hf import BARInpaintPipeline

    edit = BARInpaintPipeline.from_pipe(pipe)
    edit.set_progress_bar_config(disable=True)
    return edit


def _pil(array01, mode):
    if mode == "I;16":
        return Image.fromarray((array01 * 65535).round().astype(np.uint16))
    if mode == "I":
        return Image.fromarray((array01 * 65535).round().astype(np.int32), mode="I")
    if mode == "F":
        return Image.fromarray(array01.astype(np.float32), mode="F")
    gray = Image.fromarray((array01 * 255).round().astype(np.uint8))
    return gray.convert(mode)


@st.composite
def edit_images(draw, name, mask=False):
    """(value, valid) images or masks in every accepted type, dtype and layout, and malformed ones."""
    shape = draw(mostly(st.sampled_from([(SIZE, SIZE), (SIZE, SIZE), (2 * SIZE, 2 * SIZE)]),
                        st.sampled_from([(0, 0), (SIZE, SIZE + 3), (5, 7)])))  # fmt: skip
    valid_size = shape[0] == shape[1] > 0  # the model's aspect ratio (square): resized if needed
    rng = np.random.default_rng(draw(st.integers(0, 99)))
    values = rng.random(shape)
    if mask:
        values = (values > 0.5).astype(np.float64)
    kind = draw(
        st.sampled_from(
            ["pil_L", "pil_RGB", "pil_RGBA", "pil_I;16", "pil_I", "pil_F", "np_uint8", "np_uint16", "np_float32",
             "np_float64", "np_bool", "np_hw1", "pt_float", "pt_uint8", "np_int64", "np_neg", "pt_float_big", "list",
             "text"]
        )
    )  # fmt: skip
    valid = valid_size
    if kind.startswith("pil_"):
        value = _pil(values, kind[4:])
    elif kind == "np_uint8":
        value = (values * 255).round().astype(np.uint8)
    elif kind == "np_uint16":
        value = (values * 65535).round().astype(np.uint16)
    elif kind in ("np_float32", "np_float64"):
        value = values.astype(kind[3:])
    elif kind == "np_bool":
        value = values > 0.5
    elif kind == "np_hw1":
        value = values.astype(np.float32)[:, :, None]
    elif kind == "pt_float":
        value = torch.from_numpy(values).float()[None].expand(1 if mask else 3, -1, -1)
        value = value if not mask else value[0]
    elif kind == "pt_uint8":
        value = torch.from_numpy((values * 255).round().astype(np.uint8))[None].expand(3, -1, -1)
        value = value if not mask else value[0]
    elif kind == "np_int64":  # masks: integer 0/1 is fine; images: refused
        value = (values > 0.5).astype(np.int64) if mask else (values * 255).astype(np.int64)
        valid = valid and mask
    elif kind == "np_neg":
        value, valid = values * 2 - 1, False
    elif kind == "pt_float_big":
        value, valid = torch.from_numpy(values).float()[None] * 3, False
    elif kind == "list":
        value = [(values * 255).round().astype(np.uint8)] * draw(st.integers(0, 2))
        valid = valid and len(value) == 1
    else:
        value, valid = "picture.png", False
    if mask and kind in ("pil_I", "pil_I;16", "pil_F", "np_float32", "np_float64", "np_hw1") and valid:
        pass  # 0/1 values in every depth
    if not mask and kind == "np_hw1":
        valid = valid  # a 1-channel (H, W, 1) image is fine
    return value, valid


@settings(FUZZ, max_examples=300)
@given(
    image=edit_images("image"),
    mask_image=edit_images("mask_image", mask=True),
    labels=tagged(st.sampled_from([1, [1], "cat", np.int64(2)]), st.sampled_from([9, "dog", [1, 2, 3], None])),
    order=tagged(st.sampled_from([None, "raster", "kept_first"]), st.sampled_from(["random", 1, ""])),
    keep_bits=tagged(
        st.one_of(
            st.none(),
            st.integers(0, NUM_BITS),
            st.integers(0, NUM_BITS).map(np.int64),
            st.lists(st.booleans(), min_size=NUM_BITS, max_size=NUM_BITS),
            st.lists(st.booleans(), min_size=NUM_BITS, max_size=NUM_BITS).map(np.array),
        ),
        st.sampled_from([-1, NUM_BITS + 1, True, [1, 0, 1], [True], 1.5, "2"]),
    ),
    paste_back=tagged(st.sampled_from([True, False, np.bool_(True), np.bool_(False)]), st.sampled_from([1, "yes"])),
    output_type=tagged(st.sampled_from(["latent", "latent", "np"]), st.sampled_from(["jpeg"])),
    temperature=tagged(st.sampled_from([None, 0.0, 1.0]), st.sampled_from([-1.0, float("nan")])),
)
def test_fuzz_editing_inputs(
    edit_pipe, image, mask_image, labels, order, keep_bits, paste_back, output_type, temperature
):
    args = dict(
        image=image, mask_image=mask_image, class_labels=labels, order=order, keep_bits=keep_bits,
        paste_back=paste_back, output_type=output_type, temperature=temperature,
    )  # fmt: skip
    suspects = {name for name, (_, valid) in args.items() if not valid}
    if isinstance(mask_image[0], (np.ndarray, torch.Tensor, Image.Image)) and image[1] and mask_image[1]:
        mask_size = mask_image[0].size if isinstance(mask_image[0], Image.Image) else None
        image_value = image[0][0] if isinstance(image[0], list) else image[0]
        image_size = image_value.size if isinstance(image_value, Image.Image) else None
        if mask_size is None or image_size is None or mask_size != image_size:
            suspects.add("mask_image")  # a mask of another size than the image (and not the model's) is refused
    kwargs = {name: value for name, (value, _) in args.items()}
    ok, out = _guarded(
        edit_pipe,
        lambda: edit_pipe(**kwargs, generator=torch.Generator().manual_seed(0)),
        EDIT_NAMES,
        suspects | {"mask_image"} if suspects else {"mask_image"},  # size agreement is checked on the mask
        must_fail=bool(suspects - {"mask_image"}),
    )
    if ok and kwargs["output_type"] == "latent":
        _assert_bits(out.images, out.images.shape[0])
    elif ok:
        assert np.isfinite(out.images).all() and 0 <= out.images.min() and out.images.max() <= 1


# ---------------------------------------------------------------------------------------------------- LoRA
LORA_NAMES = (
    "pretrained_model_name_or_path_or_dict", "adapter_name", "adapter_config", "adapter_names", "adapter_weights",
    "lora_scale",
)  # fmt: skip


def _adapter(model_kwargs, rank, config_rank=None):
    """(state dict, config dict) of a random adapter of a model built with `model_kwargs`."""
    from bar_hf.pipelines.lora import add_lora_adapter, bar_lora_config

    peft = pytest.importorskip("peft")
    torch.manual_seed(rank)
    base = dict(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, latent_height=2, latent_width=2,
        num_bits=NUM_BITS, num_classes=NUM_CLASSES, num_class_tokens=1, head_hidden_size=8, head_num_layers=1,
        head_fourier_size=4,
    )  # fmt: skip
    model = BARForCausalImageModeling(BARConfig(**{**base, **model_kwargs}))
    add_lora_adapter(model, bar_lora_config(rank))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.1)
    state = peft.functional.get_peft_model_state_dict(model, adapter_name="default")
    config = model.peft_config["default"].to_dict()
    config["target_modules"] = sorted(config["target_modules"])
    if config_rank is not None:
        config["r"] = config_rank
    return state, config


@pytest.fixture(scope="module")
def lora_world(tmp_path_factory):
    pytest.importorskip("peft")
    lora_pipe = BARPipeline(**tiny_components())  # same tiny components as `pipe`, own instance
    lora_pipe.set_progress_bar_config(disable=True)
    root = tmp_path_factory.mktemp("fuzz_lora")
    (root / "config_only").mkdir()
    good_state, good_config = _adapter({}, 2)
    import json

    (root / "config_only" / "adapter_config.json").write_text(json.dumps(good_config))
    adapters = {
        "good_r2": (_adapter({}, 2), True),
        "good_r1": (_adapter({}, 1), True),
        "wide": (_adapter({"hidden_size": 24}, 2), False),
        "deeper": (_adapter({"num_hidden_layers": 2}, 2), False),
        "wrong_rank_config": (_adapter({}, 2, config_rank=3), False),
        "no_config": ((good_state, None), False),
        "garbage": (({"x": torch.zeros(1)}, good_config), False),
        "config_only_folder": ((str(root / "config_only"), None), False),
        "missing_folder": ((str(root / "nothing_here"), None), False),
    }
    return lora_pipe, adapters, root


@st.composite
def lora_ops(draw):
    ops = []
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["load", "load", "set", "fuse", "unfuse", "unload", "disable", "enable", "call"]))
        if op == "load":
            ops.append(("load", draw(st.sampled_from(
                ["good_r2", "good_r1", "wide", "deeper", "wrong_rank_config", "no_config", "garbage",
                 "config_only_folder", "missing_folder"]
            )), draw(st.sampled_from([None, "a", "b", "a", 3]))))  # fmt: skip
        elif op == "set":
            ops.append(("set", draw(st.sampled_from(["a", "b", ["a", "b"], "nope", 3])),
                        draw(st.sampled_from([None, 0.5, 1.0, [1.0, 0.5], float("nan"), "x", np.float32(2.0)]))))  # fmt: skip
        elif op == "fuse":
            ops.append(("fuse", draw(st.sampled_from([1.0, 0.5, float("inf"), "x"])),
                        draw(st.sampled_from([None, ["a"], ["nope"]]))))  # fmt: skip
        else:
            ops.append((op,))
    return ops


@settings(FUZZ, max_examples=110)
@given(ops=lora_ops())
def test_fuzz_lora_sequences(lora_world, ops):
    from bar_hf.pipelines.lora import lora_layers

    pipe, adapters, _ = lora_world
    try:
        for op in ops:
            loaded = sorted(getattr(pipe.transformer, "peft_config", None) or {})
            if op[0] == "load":
                (source, config), good = adapters[op[1]]
                name = op[2]
                bad_name = name is not None and (not isinstance(name, str) or name in loaded)
                suspects = {"pretrained_model_name_or_path_or_dict", "adapter_config"} if not good else set()
                suspects |= {"adapter_name"} if bad_name else set()
                kwargs = {"adapter_config": config} if config is not None else {}
                _guarded(
                    pipe,
                    lambda: pipe.load_lora_weights(source, adapter_name=name, **kwargs),  # noqa: B023
                    LORA_NAMES,
                    suspects or None,
                    must_fail=bool(suspects),
                )
            elif op[0] == "set":
                names, weights = op[1], op[2]
                _guarded(pipe, lambda: pipe.set_adapters(names, weights), LORA_NAMES)  # noqa: B023
            elif op[0] == "fuse":
                _guarded(pipe, lambda: pipe.fuse_lora(lora_scale=op[1], adapter_names=op[2]), LORA_NAMES)  # noqa: B023
            elif op[0] == "call":
                ok, out = _guarded(
                    pipe, lambda: pipe([1], generator=torch.Generator().manual_seed(0), output_type="latent"), ()
                )
                _assert_bits(out.images, 1)
            else:
                method = {"unfuse": pipe.unfuse_lora, "unload": pipe.unload_lora_weights,
                          "disable": pipe.disable_lora, "enable": pipe.enable_lora}[op[0]]  # fmt: skip
                _guarded(pipe, method, LORA_NAMES)
            if not getattr(pipe.transformer, "peft_config", None):
                assert not lora_layers(pipe.transformer)  # no half-loaded adapter left behind
    finally:
        pipe.unfuse_lora()
        pipe.unload_lora_weights()


# ---------------------------------------------------------------------------------------------------- casting / compile
TOGGLE_NAMES = ("storage_dtype", "compute_dtype", "non_blocking", "mode", "backend", "dtype", "save_directory")


@settings(FUZZ, max_examples=60)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(
                st.just("cast"),
                st.sampled_from([torch.float8_e4m3fn, torch.bfloat16, torch.int8, "fp8"]),
                st.sampled_from([torch.bfloat16, None, torch.float32, torch.int32]),
            ),  # fmt: skip
            st.tuples(
                st.just("compile"),
                st.sampled_from([None, "default", "turbo", 3]),
                st.sampled_from(["eager", "inductor", 5]),
            ),  # fmt: skip
            st.tuples(st.just("disable_compile")),
            st.tuples(st.just("to"), st.sampled_from([torch.float32, torch.bfloat16, "cpu"])),
            st.tuples(st.just("save")),
            st.tuples(st.just("call"), st.integers(1, 2), st.sampled_from([1.0, 3.0])),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_fuzz_casting_and_compile_toggles(pipe, tmp_path_factory, monkeypatch_module, ops):
    fresh = BARPipeline(**{name: _clone(getattr(pipe, name)) for name in ("vqvae", "transformer", "scheduler")})
    fresh.set_progress_bar_config(disable=True)
    folder = tmp_path_factory.mktemp("toggle")
    for op in ops:
        cast_on = _state(fresh)["casting"][0] is not None
        if op[0] == "cast":
            bad = not (isinstance(op[1], torch.dtype) and op[1].is_floating_point)
            bad = bad or (op[2] is not None and not op[2].is_floating_point)
            suspects = {"storage_dtype", "compute_dtype"} if bad else set()
            suspects |= {"storage_dtype"} if cast_on else set()
            _guarded(fresh, lambda: fresh.enable_layerwise_casting(op[1], op[2]), TOGGLE_NAMES, suspects or None,  # noqa: B023
                     must_fail=bool(suspects))  # fmt: skip
        elif op[0] == "compile":
            bad = op[1] not in (None, "default") or not isinstance(op[2], str)
            _guarded(fresh, lambda: fresh.enable_compile(mode=op[1], backend=op[2]), TOGGLE_NAMES,  # noqa: B023
                     {"mode", "backend"} if bad else None, must_fail=bad)  # fmt: skip
        elif op[0] == "disable_compile":
            _guarded(fresh, fresh.disable_compile, TOGGLE_NAMES)
        elif op[0] == "to":
            refuse = cast_on and isinstance(op[1], torch.dtype)
            _guarded(fresh, lambda: fresh.to(op[1]), TOGGLE_NAMES + ("to",), None, must_fail=refuse)  # noqa: B023
        elif op[0] == "save":
            _guarded(fresh, lambda: fresh.save_pretrained(folder / "saved"), TOGGLE_NAMES + ("save_pretrained",),
                     None, must_fail=cast_on)  # fmt: skip
        else:
            ok, out = _guarded(
                fresh,
                lambda: fresh(
                    list(range(op[1])),  # noqa: B023
                    guidance_scale=op[2],  # noqa: B023
                    generator=torch.Generator().manual_seed(0),
                    output_type="latent",
                ),  # fmt: skip
                (),
            )
            _assert_bits(out.images, op[1])


def _clone(component):
    import copy

    return copy.deepcopy(component)


@pytest.fixture(scope="module")
def monkeypatch_module():
    """torch.compile as the identity in the toggle fuzz: it checks the compile state machine, not the compiler
    (real compilation: tests/test_compile_cache.py)."""
    patch = pytest.MonkeyPatch()
    patch.setattr(torch, "compile", lambda function, **options: function)
    yield patch
    patch.undo()


def test_fuzz_counts_report():
    """Runs last in this module: the totals of the editing / LoRA / toggle fuzz (printed with `-s`)."""
    print(f"\nfuzz counts (editing, LoRA, casting/compile): {COUNTS}")
    assert COUNTS["internal_errors"] == COUNTS["silent_accepts"] == COUNTS["state_changes_after_refusal"] == 0
