"""`bar-hf generate` / `convert` misuse gives one `error:` line and exit code 2, never a traceback."""

import json
import os

import pytest
import torch
from test_convert import TINY_G_OVERRIDES, TINY_T_OVERRIDES, tiny_generator_state_dict, tiny_tokenizer_state_dict
from test_pipeline_bar import make_pipe

from bar_hf import cli


@pytest.fixture(scope="module")
def saved_pipe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_errors") / "pipe"
    make_pipe().save_pretrained(folder)
    return folder


def run(argv, capsys):
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def generate(saved_pipe, tmp_path, *extra):
    return ["generate", "--model", str(saved_pipe), "--class-labels", "1", "--num-images-per-label", "1",
            "--output", str(tmp_path / "grid.png"), "--quiet", *extra]  # fmt: skip


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--device", "foo"], "`--device` must be a torch device"),
        (["--tokens-allocation", "notjson"], "`--tokens-allocation` must be a JSON list"),
        (["--tokens-allocation", "{}"], "`--tokens-allocation` must be a JSON list"),
        (["--guidance-scale", "nan"], "`guidance_scale` must be a finite number"),
        (["--guidance-scale", "-1"], "`guidance_scale` must be a number >= 0"),
        (["--temperature", "inf"], "`temperature` must be a finite number"),
        (["--num-images-per-label", "0"], "`--num-images-per-label` must give 1.."),
        (["--num-images-per-label", "1000000"], "`--num-images-per-label` must give 1.."),
    ],
)
def test_generate_bad_flags_are_clear_errors(saved_pipe, tmp_path, capsys, extra, message):
    code, err = run(generate(saved_pipe, tmp_path, *extra), capsys)
    assert code == 2 and "bar-hf generate: error:" in err and message in err


def test_generate_on_a_missing_accelerator_is_a_clear_error(saved_pipe, tmp_path, capsys):
    device = "cuda:99" if torch.cuda.is_available() else "cuda"
    code, err = run(generate(saved_pipe, tmp_path, "--device", device), capsys)
    assert code == 2 and "`--device`" in err and "available on this machine" in err


@pytest.mark.parametrize("model", ["/nonexistent/folder", "not a repo id!"])
def test_generate_unknown_model_location(tmp_path, capsys, model):
    argv = ["generate", "--model", model, "--class-labels", "1", "--output", str(tmp_path / "x.png"), "--quiet"]
    code, err = run(argv, capsys)
    assert code == 2 and "neither a local folder nor a valid Hub repo id" in err


def test_generate_folder_without_pipeline(tmp_path, capsys):
    argv = ["generate", "--model", str(tmp_path), "--class-labels", "1", "--output", str(tmp_path / "x.png")]
    code, err = run(argv, capsys)
    assert code == 2 and "without model_index.json" in err


@pytest.fixture
def restore_progress_bars():
    yield
    import diffusers
    import huggingface_hub
    import transformers

    diffusers.utils.logging.enable_progress_bar()
    transformers.utils.logging.enable_progress_bar()
    huggingface_hub.utils.enable_progress_bars()


def test_quiet_silences_the_loading_bars(saved_pipe, tmp_path, capsys, restore_progress_bars):
    code, err = run(generate(saved_pipe, tmp_path), capsys)
    assert code == 0
    assert "Loading" not in err and "it/s" not in err, err


# ---------------------------------------------------------------------------------------------------- convert
class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _convert(gen, tok, out, *extra):
    return ["convert", "--generator_checkpoint", str(gen), "--tokenizer_checkpoint", str(tok), "--output_dir",
            str(out), "--generator_overrides", json.dumps(TINY_G_OVERRIDES), "--tokenizer_overrides",
            json.dumps(TINY_T_OVERRIDES), *extra]  # fmt: skip


@pytest.fixture
def checkpoints(tmp_path):
    gen, tok = tmp_path / "gen.bin", tmp_path / "tok.bin"
    torch.save(tiny_generator_state_dict(), gen)
    torch.save(tiny_tokenizer_state_dict(), tok)
    return gen, tok


def test_convert_unreadable_checkpoints_are_clear_errors(checkpoints, tmp_path, capsys):
    gen, tok = checkpoints
    text = tmp_path / "notes.bin"
    text.write_text("not a checkpoint")
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(gen.read_bytes()[: gen.stat().st_size // 2])
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.bin"
    torch.save({"weight": _Evil(marker)}, evil)
    bad_safetensors = tmp_path / "bad.safetensors"
    bad_safetensors.write_bytes(b"\x00" * 16)
    for bad in (text, truncated, evil, bad_safetensors):
        code, err = run(_convert(bad, tok, tmp_path / "out"), capsys)
        assert code == 2 and "bar-hf convert: error:" in err and "could not be read as a PyTorch state dict" in err
        assert str(bad) in err
    assert not marker.exists()  # the pickled code never ran (`weights_only=True`)


def test_convert_bad_yaml_is_a_clear_error(checkpoints, tmp_path, capsys):
    gen, tok = checkpoints
    config = tmp_path / "bad.yaml"
    config.write_text("model: [unclosed\n  generator: {")
    code, err = run(_convert(gen, tok, tmp_path / "out", "--generator_config", str(config)), capsys)
    assert code == 2 and "is not a valid YAML file" in err


@pytest.mark.parametrize(
    "overrides, message",
    [
        ('{"guidance_scale": -2.0}', "`guidance_scale` must be a number >= 0"),
        ('{"guidance_scale": NaN}', "`guidance_scale` must be a finite number"),
        ('{"guidance_schedule": ""}', "`guidance_schedule` must be one of"),
    ],
)
def test_convert_refuses_bad_guidance_before_writing(checkpoints, tmp_path, capsys, overrides, message):
    gen, tok = checkpoints
    out = tmp_path / "out"
    code, err = run(_convert(gen, tok, out, "--sampling_overrides", overrides), capsys)
    assert code == 2 and message in err and "sampling_overrides" in err
    assert not (out / "model_index.json").exists()
