"""Folders saved by bar_hf 0.1.0 (flat module layout, `tests/fixtures/saved_by_0_1_0/`) still load, through
`BARPipeline.from_pretrained` and through `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)`, and
reproduce that version's outputs bit for bit (generation and editing, every cache mode, scheduler and head)."""

import json
from pathlib import Path

import pytest
import torch
from diffusers import DiffusionPipeline
from fixtures.make_saved_by_0_1_0 import record
from safetensors.torch import load_file

from bar_hf import BARInpaintPipeline, BARPipeline
from bar_hf.masks import make_mask

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "saved_by_0_1_0"


@pytest.fixture(scope="module")
def expected():
    return load_file(FIXTURE / "expected.safetensors")


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_fixture_names_the_old_module_paths():
    index = json.loads((FIXTURE / "plain" / "model_index.json").read_text())
    assert index["transformer"][0] == "bar_hf.modeling_bar" and index["vqvae"][0] == "bar_hf.vq_model_bar"
    shim = (FIXTURE / "remote_code" / "pipeline_bar_hf.py").read_text()
    assert "from bar_hf.pipeline_bar import BARPipeline" in shim


def test_plain_folder_reproduces_every_recorded_output(expected):
    pipe = _quiet(BARPipeline.from_pretrained(FIXTURE / "plain"))
    got = record(pipe)
    assert sorted(got) == sorted(k for k in expected if not k.startswith("head_"))
    for key, value in got.items():
        assert torch.equal(value, expected[key]), key


@pytest.mark.parametrize("head", ["bitwise", "linear"])
def test_baseline_head_folders_reproduce_their_outputs(expected, head):
    pipe = _quiet(BARPipeline.from_pretrained(FIXTURE / f"head_{head}"))
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    assert torch.equal(pipe([1, 2], generator=gens, output_type="latent").images, expected[f"head_{head}_generate"])
    edit = _quiet(BARInpaintPipeline.from_pipe(pipe))(
        expected["edit_source_image"], make_mask("center", 24, 24), class_labels=2, keep_bits=1,
        generator=[torch.Generator().manual_seed(3)], output_type="latent",
    ).images  # fmt: skip
    assert torch.equal(edit, expected[f"head_{head}_edit"])


@pytest.mark.parametrize("folder, cls", [("remote_code", BARPipeline), ("remote_code_inpaint", BARInpaintPipeline)])
def test_remote_code_folders_load_through_diffusers(expected, folder, cls):
    pipe = _quiet(DiffusionPipeline.from_pretrained(FIXTURE / folder, trust_remote_code=True))
    assert type(pipe) is cls
    if cls is BARPipeline:
        gens = [torch.Generator().manual_seed(i) for i in range(4)]
        out = pipe([1, 3, 0, 3], generator=gens, temperature=0.0, output_type="latent").images
        assert torch.equal(out, expected["generate_dynamic_t0"])
    else:
        gens = [torch.Generator().manual_seed(7 + i) for i in range(2)]
        out = pipe(
            expected["edit_source_image"], make_mask("center", 24, 24), class_labels=[2, 5], order="raster",
            temperature=0.0, generator=gens, output_type="latent",
        ).images  # fmt: skip
        assert torch.equal(out, expected["edit_center_raster_t0"])
