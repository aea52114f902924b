"""Hub paths of bar_hf against a local stand-in for the Hub API (tests/hub_server.py).

The real `huggingface_hub` client (and diffusers/transformers on top of it) talks HTTP to a server on 127.0.0.1;
nothing in huggingface_hub/diffusers is mocked. The `hub` fixture only re-points the client's configuration at the
server (see `_point_client_at`).
"""

import json
import shutil

import pytest
import torch
from diffusers import DiffusionPipeline
from hub_server import HubStandIn
from huggingface_hub import ModelCard, constants, hf_api
from test_pipeline_bar import get_dummy_components

from bar_hf import BARBitScheduler, BARForCausalImageModeling, BARPipeline, BARVQModel
from bar_hf.pipelines.hub import BAR_CARD_TAGS, bar_model_card, push_pipeline_to_hub, write_remote_code_shims


def make_tiny_pipeline() -> BARPipeline:
    # the tiny components of the pipeline tests (AdaLN gates woken up so that a wrong download would show)
    pipe = BARPipeline(**get_dummy_components(), id2label={0: "zero", 1: "one"}, guidance_scale=2.0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample(pipe) -> torch.Tensor:
    return pipe([1], generator=[torch.Generator().manual_seed(0)], output_type="latent").images


def assert_same_weights(a, b) -> None:
    for name in ("transformer", "vqvae"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    assert public_config(a.scheduler) == public_config(b.scheduler)


def public_config(scheduler) -> dict:
    return {k: v for k, v in scheduler.config.items() if not k.startswith("_")}


@pytest.fixture(scope="module")
def pipe():
    return make_tiny_pipeline()


@pytest.fixture(scope="module")
def reference(pipe):
    return sample(pipe)


@pytest.fixture(scope="module")
def saved(pipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "tiny-bar"
    pipe.save_pretrained(folder)
    return folder


def _point_client_at(monkeypatch: pytest.MonkeyPatch, url: str, cache_dir) -> None:
    """Point the real huggingface_hub client (2.4) at `url`, in a process that already imported it.

    `HF_ENDPOINT` is read once, at import, into `constants.ENDPOINT`, `constants.HUGGINGFACE_CO_URL_TEMPLATE` (used by
    `hf_hub_download`) and the module-level `HfApi()` behind `huggingface_hub.model_info/create_repo/upload_folder`
    (used by diffusers' download and `push_to_hub`), so all three are updated. Offline mode is a module constant too
    (`tests/conftest.py` sets HF_HUB_OFFLINE=1 before the import). A fake token is set so that no real credential
    can reach the server and write calls carry `Authorization` like on the Hub.
    """
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hf_api.api, "endpoint", url)
    # transformers keeps one shared HfApi, created on first use with the endpoint of that moment (an earlier test
    # may have created it): point it at the stand-in too
    import transformers.utils.hub as transformers_hub

    monkeypatch.setattr(transformers_hub, "_hf_api", None)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setenv("HF_TOKEN", "hf_stand_in_token")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def hub(monkeypatch, tmp_path):
    server = HubStandIn().start()
    _point_client_at(monkeypatch, server.url, tmp_path / "hf-cache")
    try:
        yield server
    finally:
        server.stop()


def _uploads_were_inline(server: HubStandIn) -> bool:
    """No LFS batch / Xet traffic: every file went base64 in the NDJSON commit."""
    return not any("lfs" in path or "xet" in path for _, path in server.requests)


# ---------------------------------------------------------------------------------------------------------- download
def test_bar_pipeline_from_hub_id(hub, saved, pipe, reference, tmp_path):
    hub.add_folder("user/tiny-bar", saved)
    loaded = BARPipeline.from_pretrained("user/tiny-bar", cache_dir=tmp_path / "cache")
    loaded.set_progress_bar_config(disable=True)

    assert type(loaded) is BARPipeline and type(loaded.transformer) is BARForCausalImageModeling
    assert loaded.id2label == {0: "zero", 1: "one"} and loaded.config.guidance_scale == 2.0
    assert_same_weights(pipe, loaded)
    assert torch.equal(sample(loaded), reference)
    paths = {path for _, path in hub.requests}
    assert "/api/models/user/tiny-bar/revision/main" in paths
    assert any(p.startswith("/user/tiny-bar/resolve/") and p.endswith("model.safetensors") for p in paths)
    assert list((tmp_path / "cache").glob("models--user--tiny-bar/snapshots/*/model_index.json"))


def test_generic_loader_refuses_canonical_layout_from_hub(hub, saved, tmp_path):
    hub.add_folder("user/tiny-bar", saved)
    with pytest.raises(ValueError, match="does not exist in user/tiny-bar"):
        DiffusionPipeline.from_pretrained("user/tiny-bar", cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------------------------------------------------- shims
def test_remote_code_shims_local_folder(saved, pipe, tmp_path):
    folder = tmp_path / "remote"
    shutil.copytree(saved, folder)
    written = write_remote_code_shims(folder)

    assert set(written) == {
        "pipeline_bar_hf.py",
        "transformer/modeling_bar.py",
        "vqvae/vq_model.py",
        "scheduler/scheduling_bar.py",
    }
    assert "from bar_hf.models.modeling_bar import BARForCausalImageModeling" in written["transformer/modeling_bar.py"]
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_bar_hf", "BARPipeline"]
    assert index["transformer"] == ["modeling_bar", "BARForCausalImageModeling"]
    assert index["id2label"] == {"0": "zero", "1": "one"}
    assert write_remote_code_shims(folder) == {}  # idempotent

    with pytest.raises(ValueError, match="trust_remote_code"):
        DiffusionPipeline.from_pretrained(folder)
    loaded = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    assert type(loaded) is BARPipeline
    assert type(loaded.vqvae) is BARVQModel and type(loaded.scheduler) is BARBitScheduler
    assert loaded.id2label == pipe.id2label
    assert_same_weights(pipe, loaded)


def test_remote_code_shims_bad_folder(tmp_path):
    with pytest.raises(ValueError, match="model_index.json"):
        write_remote_code_shims(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "NotABarPipeline"}))
    with pytest.raises(ValueError, match="pipeline_class"):
        write_remote_code_shims(tmp_path)
    script_class = type("NotABarPipeline", (BARPipeline,), {"__module__": "__main__"})
    with pytest.raises(ValueError, match="installed package"):
        write_remote_code_shims(tmp_path, script_class)


def test_generic_loader_with_remote_code_from_hub(hub, saved, pipe, tmp_path):
    folder = tmp_path / "remote"
    shutil.copytree(saved, folder)
    write_remote_code_shims(folder)
    hub.add_folder("user/tiny-bar-remote", folder)

    loaded = DiffusionPipeline.from_pretrained(
        "user/tiny-bar-remote", trust_remote_code=True, cache_dir=tmp_path / "cache"
    )
    assert type(loaded) is BARPipeline and type(loaded.transformer) is BARForCausalImageModeling
    assert_same_weights(pipe, loaded)
    assert any(method == "GET" and p.endswith("/pipeline_bar_hf.py") for method, p in hub.requests)


def test_bar_pipeline_with_remote_code_from_hub(hub, saved, tmp_path):
    folder = tmp_path / "remote"
    shutil.copytree(saved, folder)
    write_remote_code_shims(folder)
    hub.add_folder("user/tiny-bar-remote", folder)
    loaded = BARPipeline.from_pretrained("user/tiny-bar-remote", trust_remote_code=True, cache_dir=tmp_path / "c")
    assert type(loaded.transformer) is BARForCausalImageModeling


# ---------------------------------------------------------------------------------------------------------- push
def test_push_pipeline_to_hub_and_round_trip(hub, pipe, reference, tmp_path):
    info = push_pipeline_to_hub(pipe, "user/pushed", commit_message="tiny BAR")
    files = hub.files("user/pushed")

    assert info.oid == hub.repos["user/pushed"].head and info.commit_url.startswith(hub.url)
    assert {
        "README.md",
        "model_index.json",
        "scheduler/scheduler_config.json",
        "transformer/config.json",
        "transformer/model.safetensors",
        "vqvae/config.json",
        "vqvae/diffusion_pytorch_model.safetensors",
    } <= set(files)
    assert not any(p.endswith(".py") for p in files)
    assert json.loads(files["model_index.json"])["transformer"] == [
        "bar_hf.models.modeling_bar",
        "BARForCausalImageModeling",
    ]
    readme = files["README.md"].decode()
    assert 'BARPipeline.from_pretrained("user/pushed")' in readme and "import bar_hf" in readme
    card = ModelCard(readme)
    assert card.data.library_name == "diffusers" and card.data.license == "apache-2.0"
    assert card.data.pipeline_tag == "unconditional-image-generation"
    assert list(BAR_CARD_TAGS) == card.data.tags
    assert _uploads_were_inline(hub)
    assert ("POST", "/api/models/user/pushed/commit/main") in hub.requests

    # round trip: download what was pushed, same weights, same samples
    loaded = BARPipeline.from_pretrained("user/pushed", cache_dir=tmp_path / "cache")
    loaded.set_progress_bar_config(disable=True)
    assert_same_weights(pipe, loaded)
    assert torch.equal(sample(loaded), reference)

    # pushing again to the existing repo (create_repo exist_ok) makes a second commit
    push_pipeline_to_hub(pipe, "user/pushed", remote_code=True, extra_tags=["tiny"])
    files = hub.files("user/pushed")
    assert "pipeline_bar_hf.py" in files and "transformer/modeling_bar.py" in files
    assert len(hub.repos["user/pushed"].history) == 3  # .gitattributes, first push, second push
    readme = files["README.md"].decode()
    assert "trust_remote_code=True" in readme and "- tiny" in readme


def test_push_with_explicit_endpoint(hub, pipe, monkeypatch):
    # only `endpoint=` points at the server: the global client configuration targets an unreachable host
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(hf_api.api, "endpoint", "http://127.0.0.1:9")
    info = push_pipeline_to_hub(pipe, "explicit", endpoint=hub.url, private=True)  # bare name: token owner's
    assert info.commit_url.startswith(hub.url + "/user/explicit/")
    assert hub.repos["user/explicit"].private
    files = hub.files("user/explicit")
    assert (
        "model_index.json" in files and 'BARPipeline.from_pretrained("user/explicit")' in files["README.md"].decode()
    )


def test_component_push_to_hub(hub, pipe, tmp_path):
    pipe.transformer.push_to_hub("user/tiny-transformer")
    pipe.vqvae.push_to_hub("user/tiny-vqvae")
    pipe.scheduler.push_to_hub("user/tiny-scheduler")

    assert {"config.json", "model.safetensors", "README.md"} <= set(hub.files("user/tiny-transformer"))
    assert {"config.json", "diffusion_pytorch_model.safetensors"} <= set(hub.files("user/tiny-vqvae"))
    assert "scheduler_config.json" in hub.files("user/tiny-scheduler")
    assert _uploads_were_inline(hub)

    cache = tmp_path / "cache"
    transformer = BARForCausalImageModeling.from_pretrained("user/tiny-transformer", cache_dir=cache)
    vqvae = BARVQModel.from_pretrained("user/tiny-vqvae", cache_dir=cache)
    scheduler = BARBitScheduler.from_pretrained("user/tiny-scheduler", cache_dir=cache)
    for name, loaded in (("transformer", transformer), ("vqvae", vqvae)):
        reference = getattr(pipe, name).state_dict()
        assert all(torch.equal(reference[k], v) for k, v in loaded.state_dict().items()), name
    assert public_config(scheduler) == public_config(pipe.scheduler)


# ---------------------------------------------------------------------------------------------------------- card
def test_bar_model_card_content(pipe):
    card = bar_model_card(pipe, "org/bar-tiny", license="mit", base_model="org/original", extra_tags=("x", "bar_hf"))
    text = str(card)
    assert 'BARPipeline.from_pretrained("org/bar-tiny")' in text and "import bar_hf" in text
    assert 'DiffusionPipeline.from_pretrained("org' not in text  # no generic snippet without remote code
    assert "| `guidance_scale`" in text and "`2.0`" in text and "`linear`" in text
    assert "`BARBitScheduler`" in text and "| `temperature` (τ0) | `1.0` |" in text
    assert "| `num_inference_steps` (head steps per token) | `2` |" in text
    assert "7 classes" in text
    assert card.data.license == "mit" and card.data.base_model == "org/original"
    assert card.data.tags == [*BAR_CARD_TAGS, "x"]

    remote = str(bar_model_card(pipe, "org/bar-tiny", remote_code=True))
    assert 'DiffusionPipeline.from_pretrained("org/bar-tiny", trust_remote_code=True)' in remote
    assert 'BARPipeline.from_pretrained("org/bar-tiny", trust_remote_code=True)' in remote


def test_bar_model_card_shows_explicit_allocation(pipe):
    original = pipe.scheduler
    pipe.scheduler = BARBitScheduler.from_config(original.config, tokens_allocation=[1, 1, 3], temperature=2.5)
    try:
        text = str(bar_model_card(pipe, "org/bar-tiny"))
    finally:
        pipe.scheduler = original
    assert "`[1, 1, 3]`" in text and "| `num_inference_steps` (head steps per token) | `3` |" in text
    assert "`2.5`" in text


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(repo_id="not a repo"), "(?i)repo id"),
        (dict(license=""), "license"),
        (dict(extra_tags="tiny"), "extra_tags"),
        (dict(extra_tags=[""]), "extra_tags"),
    ],
)
def test_bar_model_card_bad_arguments(pipe, kwargs, match):
    kwargs = {"repo_id": "org/bar-tiny", **kwargs}
    with pytest.raises(ValueError, match=match):  # HFValidationError is a ValueError
        bar_model_card(pipe, **kwargs)
