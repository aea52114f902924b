"""BARPipeline input validation and strict loading of pipeline folders."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from test_pipeline_bar import gens, get_dummy_components, make_pipe

from bar_hf import BARPipeline


@pytest.fixture(scope="module")
def pipe():
    return make_pipe()


def latent(pipe, labels, **kwargs):
    kwargs.setdefault("generator", gens(len(pipe._resolve_labels(labels)) * kwargs.get("num_images_per_label", 1)))
    return pipe(labels, output_type="latent", **kwargs).images


# ---------------------------------------------------------------------------------------------------- item 7
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), -0.5, np.float32("nan")])
def test_guidance_scale_must_be_finite_and_non_negative(pipe, value):
    with pytest.raises(ValueError, match="guidance_scale"):
        pipe([1], guidance_scale=value, output_type="latent")
    with pytest.raises(ValueError, match="guidance_scale"):
        BARPipeline(**get_dummy_components(), guidance_scale=value)


def test_guidance_type_errors_name_the_argument(pipe):
    for value in ("3", [3.0], True, 3 + 0j):
        with pytest.raises(TypeError, match="guidance_scale"):
            pipe([1], guidance_scale=value, output_type="latent")


def test_empty_guidance_schedule_is_an_error_not_the_default(pipe):
    with pytest.raises(ValueError, match="guidance_schedule"):
        pipe([1], guidance_schedule="", output_type="latent")
    with pytest.raises(ValueError, match="guidance_schedule"):
        BARPipeline(**get_dummy_components(), guidance_schedule="")


# ---------------------------------------------------------------------------------------------------- item 9
@pytest.mark.parametrize("generator", [0, [None], "seed", (torch.Generator(), 1)])
def test_generator_misuse_is_a_type_error(pipe, generator):
    labels = [1, 3] if isinstance(generator, tuple) else [1]
    with pytest.raises(TypeError, match="generator"):
        pipe(labels, generator=generator, output_type="latent")


def _callback(fn):
    def callback(p, i, t, kwargs):
        return fn(kwargs)

    return callback


@pytest.mark.parametrize(
    "fn, error, match",
    [
        (lambda kw: None, TypeError, "must return a dict"),
        (lambda kw: {"bits": torch.full_like(kw["bits"], 7)}, ValueError, r"values \[7\]"),
        (lambda kw: {"bits": torch.full_like(kw["bits"], 2)}, ValueError, r"values \[2\].*mask value"),
        (lambda kw: {"bits": kw["bits"].float()}, TypeError, "integer"),
        (lambda kw: {"bits": kw["bits"][:, :, :2]}, ValueError, "shape"),
        (lambda kw: (kw["bits"].fill_(2), kw)[1], ValueError, r"values \[2\]"),  # edited in place
    ],
)
def test_bad_callback_outputs_are_clear_errors(pipe, fn, error, match):
    with pytest.raises(error, match=match):
        pipe([1], generator=gens(1), output_type="latent", callback_on_step_end=_callback(fn))


def test_callback_replacing_bits_with_valid_values_still_works(pipe):
    out = latent(pipe, [1], callback_on_step_end=_callback(lambda kw: {"bits": torch.ones_like(kw["bits"])}))
    assert out.min() == 1  # every token replaced by ones (only the decoded image changes, not the cached context)


def test_huge_batch_is_rejected_up_front(pipe, monkeypatch):
    from bar_hf.pipelines import inputs as pipeline_inputs

    with pytest.raises(ValueError, match=r"num_images_per_label.*1000000 images exceeds the per-call limit"):
        pipe([1], num_images_per_label=10**6, output_type="latent")
    # the lower-bound memory estimate (KV cache + bits + images) is compared with the device's memory
    monkeypatch.setattr(pipeline_inputs, "_device_memory", lambda device: 10_000)
    with pytest.raises(ValueError, match=r"needs at least .* GiB"):
        pipe([1], num_images_per_label=4, output_type="latent")


def test_memory_estimate_counts_kv_cache_bits_and_images(pipe):
    from bar_hf.pipelines import inputs as pipeline_inputs

    config = pipe.transformer.config
    seq = config.prefix_length + config.num_ar_steps
    kv = 2 * config.num_hidden_layers * 2 * 3 * seq * config.hidden_size * 4  # CFG doubles the rows
    bits = 3 * config.num_ar_steps * config.bits_per_token * 8
    assert pipeline_inputs.estimate_sampling_memory(config, 3, True, torch.float32, 10) == kv + bits + 3 * 10 * 4


# ---------------------------------------------------------------------------------------------------- item 10
def test_numpy_and_torch_scalars_are_accepted(pipe):
    ref = latent(pipe, [1, 3], guidance_scale=3.0, temperature=0.5, num_inference_steps=2)
    for scalar in (np.float32, np.float64, torch.tensor):
        out = latent(pipe, [1, 3], guidance_scale=scalar(3.0), temperature=scalar(0.5), num_inference_steps=2)
        assert torch.equal(out, ref)
    out = latent(pipe, [1, 3], guidance_scale=3, temperature=0.5, num_inference_steps=np.int64(2))
    assert torch.equal(out, ref)
    twice = latent(pipe, [1], num_images_per_label=np.int32(2))
    assert twice.shape[0] == 2
    alloc = latent(pipe, [1], tokens_allocation=np.array([2, 3]))
    assert torch.equal(alloc, latent(pipe, [1], tokens_allocation=[2, 3]))


@pytest.mark.parametrize(
    "labels",
    [
        np.array([1, 3]),
        np.array([[1], [3]]),
        torch.tensor([[1], [3]]),
        [[1], [3]],  # DiT-style nested lists: flattened row-major
        [np.int64(1), torch.tensor(3)],
        [[1, "three"]],
        np.array(["one", "three"]),
    ],
)
def test_label_arrays_and_nested_lists(pipe, labels):
    assert pipe._resolve_labels(labels) == [1, 3]


@pytest.mark.parametrize(
    "labels, error, match",
    [
        (np.array([1.0, 3.0]), TypeError, "class_labels"),
        (torch.tensor([1.5]), TypeError, "class_labels"),
        ([1.0], TypeError, "class_labels"),
        ([[]], ValueError, "non-empty"),
        (np.zeros((0,), dtype=np.int64), ValueError, "non-empty"),
        ({1, 3}, TypeError, "class_labels"),
        ([True], TypeError, "class_labels"),
        (None, TypeError, "class_labels"),
    ],
)
def test_bad_label_containers(pipe, labels, error, match):
    with pytest.raises(error, match=match):
        pipe._resolve_labels(labels)


def test_class_names_match_case_insensitively_with_ambiguity_errors(pipe):
    assert pipe._resolve_labels(["ONE", " Nought ", "Three"]) == [1, 0, 3]
    assert pipe.get_label_ids("ZERO") == [0]
    components = get_dummy_components()
    cats = BARPipeline(**components, id2label={0: "Cat", 1: "cat", 2: "dog"})
    assert cats.get_label_ids(["Cat", "cat", "DOG"]) == [0, 1, 2]  # an exact spelling always wins
    with pytest.raises(ValueError, match=r"'CAT' is ambiguous.*\[0, 1\] \(\['Cat', 'cat'\]\)"):
        cats.get_label_ids("CAT")
    cranes = BARPipeline(**components, id2label={0: "crane", 1: "crane, derrick"})  # as ImageNet 134 and 517
    assert cranes.get_label_ids("derrick") == [1]
    with pytest.raises(ValueError, match=r"'crane' is ambiguous.*\[0, 1\]"):
        cranes.get_label_ids("crane")


@pytest.mark.parametrize("id2label", [{"abc": "x"}, {1.5: "x"}, {"-1": "x"}, {1: 5}, {1: ""}, ["x"]])
def test_bad_id2label_is_a_clear_error(id2label):
    with pytest.raises((ValueError, TypeError), match="id2label"):
        BARPipeline(**get_dummy_components(), id2label=id2label)


# ---------------------------------------------------------------------------------------------------- item 8
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("strict") / "pipe"
    make_pipe().save_pretrained(folder)
    return folder


def _variant(saved, tmp_path, edit):
    folder = tmp_path / "variant"
    shutil.copytree(saved, folder)
    edit(folder)
    return folder


def _drop_keys(sub, prefix):
    def edit(folder):
        path = next((folder / sub).glob("*.safetensors"))
        state = {k: v for k, v in load_file(path).items() if not k.startswith(prefix)}
        save_file(state, path, metadata={"format": "pt"})

    return edit


def _edit_json(name, **changes):
    def edit(folder):
        path = folder / name
        data = json.loads(path.read_text())
        data.update(changes)
        path.write_text(json.dumps(data))

    return edit


@pytest.mark.parametrize(
    "edit, error, match",
    [
        (_drop_keys("transformer", "head."), ValueError, r"`transformer` weights .* missing \(\d+\): head\."),
        (_edit_json("transformer/config.json", num_hidden_layers=1), ValueError, r"unexpected .* model\.layers\.1\."),
        (_drop_keys("vqvae", "decoder"), ValueError, r"`vqvae` weights .* missing .* decoder\."),
        (_edit_json("transformer/config.json", head_type="linear"), ValueError, r"`transformer` weights .* head\."),
        (_edit_json("vqvae/config.json", num_bits=3), ValueError, r"`vqvae` weights .* shape mismatch"),
        (_edit_json("model_index.json", scheduler=["diffusers", "DDPMScheduler"]), TypeError, "`scheduler` must be"),
        (_edit_json("model_index.json", guidance_scale=-1.0), ValueError, "guidance_scale"),
        (_edit_json("model_index.json", guidance_scale=float("nan")), ValueError, "guidance_scale"),
        (_edit_json("model_index.json", id2label={"abc": "x"}), ValueError, "id2label"),
    ],
)
def test_mismatched_pipeline_folders_fail_at_load(saved, tmp_path, edit, error, match):
    folder = _variant(saved, tmp_path, edit)
    with pytest.raises(error, match=match):
        BARPipeline.from_pretrained(folder)


def test_wrong_transformer_class_is_rejected_at_load(saved, tmp_path):
    folder = _variant(saved, tmp_path, _edit_json("model_index.json", transformer=["transformers", "GPT2LMHeadModel"]))
    with pytest.raises(TypeError, match="`transformer` must be a BARForCausalImageModeling, got GPT2LMHeadModel"):
        BARPipeline.from_pretrained(folder)


def test_intact_folder_still_loads(saved):
    pipe = BARPipeline.from_pretrained(saved)
    assert type(pipe).__name__ == "BARPipeline"


# ---------------------------------------------------------------------------------------------------- item 13
@pytest.fixture
def diffusers_records():
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("diffusers")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_to_dtype_keeps_the_quantizer_in_float32_without_a_warning(diffusers_records):
    pipe = make_pipe()
    pipe.to(torch.bfloat16)
    assert pipe.transformer.dtype == torch.bfloat16 and pipe.vqvae.dtype == torch.bfloat16
    assert {p.dtype for p in pipe.vqvae.quantize.parameters()} == {torch.float32}
    other = BARPipeline.from_pipe(pipe, dtype=torch.float16)
    assert {p.dtype for p in other.vqvae.quantize.parameters()} == {torch.float32}
    assert not [r for r in diffusers_records if "kept in float32" in r.getMessage()]
    images = pipe([1], generator=gens(1), output_type="np").images
    assert images.shape == (1, 24, 24, 3) and np.isfinite(images).all()


# ---------------------------------------------------------------------------------------------------- item 12
def test_bundled_model_gives_grayscale_images_and_the_docs_say_so():
    from pathlib import Path

    from bar_hf import bundled_model_path

    bundled = BARPipeline.from_pretrained(bundled_model_path())
    bundled.set_progress_bar_config(disable=True)
    assert bundled.vqvae.config.out_channels == 1
    images = bundled([0], generator=gens(1), num_inference_steps=1).images
    assert images[0].mode == "L"
    docs = (Path(__file__).resolve().parents[1] / "docs" / "api" / "pipeline.md").read_text()
    assert "`H × W` RGB images" not in docs and "(batch, H, W, 3)" not in docs
    assert "mode `L` (grayscale) for a 1-channel one" in docs and "1 (grayscale, PIL mode `L`) for the bundled" in docs
