"""`bar-hf app` without a browser: the page's logic (`bar_hf.app.core.BARApp`), its Gradio event handlers, the
`app` subcommand and the Space folder, on a tiny saved pipeline (the browser test is tests/test_app_browser.py)."""

import ast
import json
import re
import shlex
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_pipeline_bar import make_pipe

from bar_hf import BARInpaintPipeline, cli
from bar_hf.app.core import PAINTED_MASK, SCHEDULERS, UPLOADED_MASK, BARApp, run_safely
from bar_hf.masks import make_mask

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "spaces" / "bar-fashion-mnist"
LOGPROB, ADAPTIVE = "log-prob (BARLogProbBitScheduler)", "adaptive (BARAdaptiveBitScheduler)"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("app") / "pipe"
    make_pipe().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def app(saved):
    return BARApp.from_pretrained(str(saved))


def arrays(images):
    return [np.asarray(image) for image in images]


def same_pixels(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(arrays(a), arrays(b)))


def painted_layer(size=240, box=(0, 0, 12, 12)):
    """An RGBA stroke layer as the image editor hands it over: opaque where painted."""
    layer = np.zeros((size, size, 4), np.uint8)
    top, left, bottom, right = box
    layer[top:bottom, left:right] = (255, 45, 85, 255)
    return layer


# ---------------------------------------------------------------------------------------------------- generate
def test_class_choices_and_defaults(app):
    choices = app.class_choices()
    assert len(choices) == 7  # one per class id; classes without a name are shown and passed as their id
    assert choices[:4] == [("0: zero", "zero"), ("1: one", "one"), ("2", "2"), ("3: three", "three")]
    defaults = app.defaults()
    assert defaults["guidance_scale"] == 2.0 and defaults["guidance_schedule"] == "linear"
    assert defaults["scheduler"] == "fixed (BARBitScheduler)" and defaults["num_inference_steps"] == 2
    assert app.image_size == (24, 24)


def test_generate_equals_the_cli_for_the_same_settings(app, tmp_path):
    result = app.generate(
        ["one", "3"], 2, seed=5, guidance_scale=2.5, guidance_schedule="constant", temperature=0.9,
        num_inference_steps=3,
    )  # fmt: skip
    settings = result.settings
    assert settings["class_labels"] == [1, 3] and settings["class_names"] == ["one", "three"]
    assert (settings["seed"], settings["num_images_per_label"], settings["guidance_scale"]) == (5, 2, 2.5)
    assert result.captions == ["one · seed 5", "one · seed 6", "three · seed 7", "three · seed 8"]
    # the settings' command line, run as it is, writes the same pixels
    argv = shlex.split(settings["command"])
    assert argv[:2] == ["bar-hf", "generate"]
    out = tmp_path / "cli"
    assert cli.main([str(out) if a == "bar_images" else a for a in argv[1:]] + ["--quiet"]) == 0
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [
        "00000_class1_seed5.png", "00001_class1_seed6.png", "00002_class3_seed7.png", "00003_class3_seed8.png",
    ]  # fmt: skip
    assert same_pixels([Image.open(f) for f in files], result.images)
    # the zip holds those files and the settings, which are also downloadable on their own
    with zipfile.ZipFile(result.zip_path) as archive:
        assert sorted(archive.namelist()) == sorted(
            [f"bar_images/{f.name}" for f in files] + ["bar_images/settings.json"]
        )
        assert json.loads(archive.read("bar_images/settings.json")) == settings
        assert same_pixels([Image.open(archive.open(f"bar_images/{f.name}")) for f in files], result.images)
    assert json.loads(Path(result.settings_path).read_text()) == settings


def test_other_schedulers_are_swapped_and_reproduced_by_the_python_snippet(app):
    fixed = app.generate(["one"], 3, seed=1, num_inference_steps=2)
    for name in (LOGPROB, ADAPTIVE):
        result = app.generate(["one"], 3, seed=1, scheduler=name, num_inference_steps=2)
        assert result.settings["scheduler"] == SCHEDULERS[name].__name__
        assert result.settings["command"] is None  # `bar-hf generate` has no scheduler option
        namespace = {}
        exec(result.settings["python"], namespace)
        assert type(namespace["pipe"].scheduler) is SCHEDULERS[name]
        assert same_pixels(namespace["images"], result.images)
    assert not same_pixels(result.images, fixed.images)  # the adaptive scheduler really was used
    assert type(app.pipe.scheduler).__name__ == "BARBitScheduler"  # the model's scheduler is back


def test_progress_is_reported_after_every_ar_step(app):
    seen = []
    app.generate(["one"], 1, progress=lambda fraction, desc: seen.append((fraction, desc)))
    steps = app.pipe.transformer.config.num_ar_steps
    assert [f for f, _ in seen] == [(i + 1) / steps for i in range(steps)]
    assert seen[-1][1] == f"generating: token {steps}/{steps}"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(class_labels=[]), "`class_labels` must be a non-empty list of class ids or names"),
        (dict(class_labels=["unicorn"]), "'unicorn' is not a known class name"),
        (dict(guidance_scale=float("nan")), "`guidance_scale` must be a finite number, got nan"),
        (dict(guidance_schedule="cosine"), "`guidance_schedule` must be one of"),
        (dict(temperature=-1.0), "`temperature`"),
        (dict(num_images_per_label=0), "`num_images_per_label`"),
    ],
)
def test_bad_generate_inputs_give_the_pipeline_message(app, kwargs, message):
    arguments = dict(class_labels=["one"], num_images_per_label=1, seed=0) | kwargs
    result, error = run_safely(app.generate, **arguments)
    assert result is None and message in error and "Traceback" not in error
    assert len(app.generate(["one"], 1).images) == 1  # and the app goes on serving


# ---------------------------------------------------------------------------------------------------- edit
def test_edit_equals_the_inpaint_pipeline_and_keeps_the_unmasked_pixels(app, saved):
    source = app.generate(["one"], 1, seed=2).images[0]
    result = app.edit(source, "center", class_label="three", order="raster", num_samples=2, seed=4)
    editor = BARInpaintPipeline.from_pretrained(saved)
    editor.set_progress_bar_config(disable=True)
    mask = make_mask("center", 24, 24, generator=torch.Generator().manual_seed(4))
    expected = editor(
        [source] * 2, mask, "three", order="raster", generator=[torch.Generator().manual_seed(4 + i) for i in range(2)]
    ).images
    assert same_pixels(result.completions, expected)
    kept = np.asarray(result.mask) == 0  # black = kept AR token cells
    assert kept.any() and not kept.all()
    for completion in arrays(result.completions):
        assert np.array_equal(completion[kept], np.asarray(result.original)[kept])
    assert np.array_equal(np.asarray(result.original), np.asarray(source))
    assert "--mask center" in result.settings["command"] and result.settings["order"] == "raster"
    assert result.captions[:2] == ["original", "mask (white = regenerated)"]


def test_painted_mask_is_max_pooled_to_the_model_size(app):
    mask = app.painted_mask({"layers": [painted_layer(240, (0, 0, 12, 12))], "background": None})
    assert mask.shape == (24, 24)
    assert mask[:2, :2].all() and mask.sum() == 4  # 12 canvas px at 10 canvas px per pixel touch 2 pixels
    with pytest.raises(ValueError, match="paint the region"):
        app.painted_mask({"layers": [np.zeros((240, 240, 4), np.uint8)]})


def test_painted_edit_regenerates_only_the_painted_tokens(app):
    source = app.generate(["zero"], 1, seed=0).images[0]
    canvas = {"background": None, "layers": [painted_layer(240, (0, 0, 40, 40))]}
    result = app.edit(source, PAINTED_MASK, canvas, class_label="one", num_samples=1, seed=0)
    regenerated = np.asarray(result.mask) == 255
    assert regenerated[:4, :4].all() and not regenerated[12:].any() and not regenerated[:, 12:].any()


def test_bad_edit_inputs_give_a_message(app, tmp_path):
    source = app.generate(["one"], 1).images[0]
    wrong = tmp_path / "wrong.png"
    Image.new("L", (20, 10)).save(wrong)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    cases = [
        (dict(image=source, mask_choice=UPLOADED_MASK, mask_upload=str(wrong)), "`mask_image` is 10x20 (HxW)"),
        (dict(image=str(text), mask_choice="center"), "the uploaded file is not an image"),
        (dict(image=None, mask_choice="center"), "upload an image first"),
        (dict(image=Image.new("RGB", (40, 24)), mask_choice="center"), "`image`"),
        (dict(image=source, mask_choice="center", class_label=""), "`class_labels` must be a non-empty list"),
        (dict(image=source, mask_choice="center", order="spiral"), "`order`"),
        (dict(image=source, mask_choice="center", guidance_scale=float("nan")), "`guidance_scale`"),
        (dict(image=source, mask_choice="center", keep_bits=99), "`keep_bits`"),
    ]
    for kwargs, message in cases:
        result, error = run_safely(app.edit, **(dict(class_label="one", num_samples=1) | kwargs))
        assert result is None and message in error, (kwargs, error)


# ---------------------------------------------------------------------------------------------------- page
def test_event_handlers_show_errors_and_feed_the_edit_tab(app):
    gr = pytest.importorskip("gradio")
    from bar_hf.app import demo

    failed = demo.generate_event(app, [], 1, 0, 2.0, "linear", 1.0, None, 2)
    assert failed[1].startswith("**Error:** `class_labels` must be a non-empty list")
    assert all(isinstance(out, type(gr.skip())) for i, out in enumerate(failed) if i != 1)  # other outputs kept
    done = demo.generate_event(app, ["one", "three"], 2, 0, 2.0, "linear", 1.0, LOGPROB, 2)
    gallery, status, zip_path, settings_path, settings, images = done
    assert [caption for _, caption in gallery] == ["one · seed 0", "one · seed 1", "three · seed 2", "three · seed 3"]
    assert status.startswith("Generated 4 images") and settings["scheduler"] == "BARLogProbBitScheduler"
    assert Path(zip_path).is_file() and Path(settings_path).is_file() and images[2] is gallery[2][0]
    sent, tab, message = demo.send_event(images, 2)
    assert sent is images[2] and "Sent image 3" in message
    canvas, status = demo.source_event(app, sent)
    assert canvas["background"].size == (240, 240) and canvas["layers"] == []
    edited = demo.edit_event(
        app, sent, PAINTED_MASK, {"layers": [painted_layer()]}, None, "zero", "raster", 0, 2, 0, 2.0, 2, 1.0
    )
    assert [caption for _, caption in edited[0]] == ["original", "mask (white = regenerated)", "seed 0", "seed 1"]
    failed = demo.edit_event(app, sent, UPLOADED_MASK, None, None, "zero", "raster", 0, 1, 0, 2.0, 2, 1.0)
    assert failed[1] == "**Error:** upload a mask image first."
    assert demo.send_event([], 0)[2].startswith("**Error:**")


def test_build_demo_registers_the_two_api_endpoints(app):
    pytest.importorskip("gradio")
    from bar_hf.app import build_demo

    blocks = build_demo(app)
    names = {getattr(fn, "api_name", None) for fn in blocks.fns.values()}
    assert {"generate", "edit"} <= names


def test_app_subcommand_offers_gradios_options():
    args = cli.build_parser().parse_args(["app"])
    assert (args.model, args.host, args.port, args.share) == (None, "127.0.0.1", None, False)
    args = cli.build_parser().parse_args(
        ["app", "--model", "org/bar", "--host", "0.0.0.0", "--port", "8080", "--share"]
    )
    assert (args.model, args.host, args.port, args.share) == ("org/bar", "0.0.0.0", 8080, True)


def test_space_folder_is_pushable():
    text = (SPACE / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "the Space README must start with a YAML metadata block"
    meta = yaml.safe_load(match.group(1))
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["license"] == "apache-2.0"
    assert meta["title"] and re.fullmatch(r"\d+\.\d+\.\d+", meta["sdk_version"])
    install_requires, extras = _setup_requirements()
    lowest = re.search(r"gradio>=([\d.]+)", " ".join(extras["app"])).group(1)
    version = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert version(meta["sdk_version"]) >= version(lowest)
    compile((SPACE / "app.py").read_text(encoding="utf-8"), "app.py", "exec")
    # every runtime requirement of bar_hf is in the Space's requirements.txt, with the same lower bound
    runtime = [r.replace(" ", "") for r in install_requires]
    listed = [line.strip() for line in (SPACE / "requirements.txt").read_text().splitlines() if line[:1].isalpha()]
    assert sorted(map(_normal, runtime)) == sorted(map(_normal, listed))


def _setup_requirements() -> tuple[list[str], dict[str, list[str]]]:
    """`install_requires` and `extras_require` as written in setup.py (not the possibly stale installed metadata)."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    keywords = {k.arg: k.value for k in call.keywords}
    return ast.literal_eval(keywords["install_requires"]), ast.literal_eval(keywords["extras_require"])


def _normal(requirement: str) -> str:
    name, rest = re.match(r"([A-Za-z0-9_.-]+)(.*)", requirement).group(1, 2)
    return name.lower().replace("_", "-") + ",".join(sorted(rest.split(",")))
