"""`bar-hf` flag checks: `--scale`, `--output`, `--model` pointing at a file, `get_label_ids` types, and every
subcommand's `--help` shows the defaults."""

import argparse

import pytest
from test_pipeline_bar import make_pipe

from bar_hf import cli


@pytest.fixture(scope="module")
def saved_pipe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_flags") / "pipe"
    make_pipe().save_pretrained(folder)
    return folder


def run(argv, capsys):
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.mark.parametrize("command", ["generate", "inpaint"])
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--scale", "0"], "`--scale` must be an integer >= 1 (grid upscaling factor), got 0"),
        (["--scale", "-3"], "`--scale` must be an integer >= 1 (grid upscaling factor), got -3"),
        (["--output", "."], "`--output` '.' is a folder"),
        (["--output", "grid"], "`--output` 'grid' must end with an image file extension"),
        (["--output", "grid.xyz"], "got .xyz"),
    ],
)
def test_bad_scale_and_output_name_the_flag(saved_pipe, tmp_path, capsys, command, extra, message):
    if command == "generate":
        argv = ["generate", "--model", str(saved_pipe), "--class-labels", "1", "--quiet"]
    else:
        image = tmp_path / "in.png"
        make_pipe()([1], output_type="pil").images[0].save(image)
        argv = [
            "inpaint",
            str(image),
            "--mask",
            "center",
            "--model",
            str(saved_pipe),
            "--class-labels",
            "1",
            "--quiet",
        ]
    code, err = run([*argv, *extra], capsys)
    assert code == 2 and f"bar-hf {command}: error:" in err and message in err, err


def test_model_pointing_at_a_file(saved_pipe, tmp_path, capsys):
    model = str(saved_pipe / "model_index.json")
    argv = ["generate", "--model", model, "--class-labels", "1", "--output", str(tmp_path / "g.png"), "--quiet"]
    code, err = run(argv, capsys)
    assert code == 2 and "is a file, not a pipeline folder" in err and "Hub" in err


def test_get_label_ids_refuses_non_names():
    pipe = make_pipe()
    for label in (3, [3], None, b"one"):
        with pytest.raises(TypeError, match="`label` must be a class name or a list of class names"):
            pipe.get_label_ids(label)
    assert pipe.get_label_ids("one") == pipe.get_label_ids(["one"])


def test_every_subcommand_help_shows_defaults():
    parser = cli.build_parser()
    subcommands = parser._subparsers._group_actions[0].choices
    assert {"generate", "demo", "inpaint"} <= set(subcommands)
    for name, subparser in subcommands.items():
        assert subparser.formatter_class is argparse.ArgumentDefaultsHelpFormatter, name
        text = " ".join(subparser.format_help().split())
        for action in subparser._actions:
            if action.option_strings and action.dest != "help" and action.default is not argparse.SUPPRESS:
                assert action.help, (name, action.option_strings)
                assert f"(default: {action.default})" in text, (name, action.option_strings)
