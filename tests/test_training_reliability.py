"""Reliability of the training scripts: exact resume after a SIGKILL at any step (mid-epoch
included) and during checkpoint writing, atomic and checksummed checkpoints, up-front flag/data validation, tokenizer
fingerprints.

The SIGKILL runs are subprocesses started through `tests/kill_after.py` (the kill is injected by the test, not by the
scripts); everything else runs in-process. Exact resume is promised bitwise with one thread (docs/guides/training.md):
the killed runs and the in-process runs use one thread. Every resume test also proves the resumed run started from
the checkpoint (its first logged step is the checkpoint's step + 1), since a seeded fresh start would reproduce the
reference too.
"""

import gzip
import json
import shutil

import datasets
import numpy as np
import pytest
import torch
from example_scripts import load_script, run_killed
from safetensors.torch import load_file
from test_examples import (  # noqa: F401
    VQ_CONFIG,
    logged_steps,
    tokens,
    train_bar_cli_args,
    trained_vq,
    workdir,
)

from bar_hf import BARPipeline, BARVQModel
from bar_hf.training.checkpoints import (
    CHECKPOINT_MARKER,
    CorruptCheckpointError,
    TrainingProgress,
    list_checkpoints,
    read_checkpoint_marker,
    resolve_resume_checkpoint,
    resume_training_state,
    verify_checkpoint,
)
from bar_hf.training.data import DEBIAN_FASHION_MNIST_DIR, load_image_dataset
from bar_hf.training.utils import tokenizer_fingerprint

# 18 images, batch 4, drop_last: 4 batches per epoch; checkpoints every 2 steps, 6 steps in all
BAR_STEPS = ["--max_train_steps", "6"]


def assert_same_checkpoint(a, b) -> None:
    """Bit-identical model weights (safetensors), optimizer, LR scheduler and training position."""
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    oa, ob = (torch.load(p / "optimizer.bin", weights_only=True) for p in (a, b))
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys() and oa["state"]
    for index, state in oa["state"].items():
        for name, value in state.items():
            assert torch.equal(value, ob["state"][index][name]), (index, name)
    assert torch.load(a / "scheduler.bin", weights_only=True) == torch.load(b / "scheduler.bin", weights_only=True)
    ma, mb = read_checkpoint_marker(a), read_checkpoint_marker(b)
    assert {k: ma[k] for k in ("global_step", "epoch", "batches_in_epoch")} == {
        k: mb[k] for k in ("global_step", "epoch", "batches_in_epoch")
    }


def run_in_process(script, argv) -> None:
    """A run that is not killed: in this process (saves a Python start-up; CPU results equal a subprocess's), with the
    one thread under which exact resume is promised."""
    assert torch.get_num_threads() == 1  # tests/conftest.py
    module = load_script(script)
    module.main(module.parse_args([str(a) for a in argv]))


def resume_in_process(script, argv, out, run, checkpoint_step: int) -> list[int]:
    """Resume `out` in this process; assert the resumed run's logged steps start at `checkpoint_step + 1` (it
    really loaded the checkpoint: a silent fresh start would log from step 1) and return them."""
    before = len(logged_steps(out, run))
    run_in_process(script, [*argv, "--resume_from_checkpoint", "latest"])
    steps = logged_steps(out, run)[before:]
    assert steps and steps[0] == checkpoint_step + 1, steps
    assert steps == list(range(checkpoint_step + 1, steps[-1] + 1)), steps  # no step repeated or skipped
    return steps


def bar_argv(workdir, tokens, trained_vq, out, *extra):  # noqa: F811
    """The command line of `test_examples.run_train_bar`, for in-process runs."""
    return [
        "--pretokenized_dataset", tokens, "--vqvae_model_name_or_path", trained_vq, "--model_config",
        workdir / "bar.json", "--output_dir", out, "--train_batch_size", "4", "--max_train_steps", "6",
        "--checkpointing_steps", "2", "--logging_steps", "1", "--random_order_anneal_start", "1",
        "--random_order_anneal_end", "3", "--num_inference_steps", "2", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def bar_reference(workdir, tokens, trained_vq):  # noqa: F811
    run_in_process("train_bar", bar_argv(workdir, tokens, trained_vq, workdir / "bar_ref6"))
    return workdir / "bar_ref6"


@pytest.mark.slow
def test_train_bar_exact_resume_after_sigkill_mid_epoch(workdir, tokens, trained_vq, bar_reference):  # noqa: F811
    out = workdir / "bar_mid_epoch"
    # killed as it was about to write checkpoint-4: steps 3 and 4 are lost, checkpoint-2 is the latest
    killed = run_killed("before-checkpoint", 4, "train_bar", train_bar_cli_args(workdir, tokens, trained_vq, out, BAR_STEPS))
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert [p.name for p in list_checkpoints(out, complete_only=True)] == ["checkpoint-2"]
    assert read_checkpoint_marker(out / "checkpoint-2")["batches_in_epoch"] == 2  # mid-epoch (4 batches per epoch)
    assert logged_steps(out, "train_bar") == [1, 2, 3, 4]
    steps = resume_in_process("train_bar", bar_argv(workdir, tokens, trained_vq, out), out, "train_bar", 2)
    assert steps == [3, 4, 5, 6]
    for step in (4, 6):
        assert_same_checkpoint(bar_reference / f"checkpoint-{step}", out / f"checkpoint-{step}")
    a = load_file(bar_reference / "pipeline" / "transformer" / "model.safetensors")
    b = load_file(out / "pipeline" / "transformer" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    pipe = BARPipeline.from_pretrained(out / "pipeline")
    assert pipe.id2label == {0: "cat", 1: "dog", 2: "fox"}
    pipe.set_progress_bar_config(disable=True)
    assert pipe(["dog"], generator=[torch.Generator().manual_seed(0)], output_type="np").images.shape == (1, 16, 16, 3)
    log = [json.loads(line) for line in (out / "logs" / "train_bar" / "metrics.jsonl").read_text().splitlines()]
    ref = [
        json.loads(line) for line in (bar_reference / "logs" / "train_bar" / "metrics.jsonl").read_text().splitlines()
    ]
    # the steps 3..6 redone after the resume have exactly the losses of the uninterrupted run
    assert [r["loss"] for r in log if r["step"] > 2][-4:] == [r["loss"] for r in ref if r["step"] > 2]


@pytest.mark.slow
def test_train_bar_kill_during_checkpoint_write(workdir, tokens, trained_vq, bar_reference):  # noqa: F811
    out = workdir / "bar_kill_in_save"
    limit = ["--checkpoints_total_limit", "1"]
    argv = train_bar_cli_args(workdir, tokens, trained_vq, out, [*BAR_STEPS, *limit])
    killed = run_killed("checkpoint-files", 6, "train_bar", argv)
    assert killed.returncode == -9, killed.stderr[-3000:]
    # the older checkpoint is pruned only once a newer one is complete
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-4"]
    assert (out / ".tmp-checkpoint-6").is_dir() and not (out / "pipeline").exists()
    # also the layout an older version left behind: a partial `checkpoint-6` (no optimizer.bin, no marker)
    (out / ".tmp-checkpoint-6").rename(out / "checkpoint-6")
    (out / "checkpoint-6" / "optimizer.bin").unlink()
    (out / ".tmp-checkpoint-5").mkdir()  # a leftover of an earlier kill, removed after the next complete save
    assert resolve_resume_checkpoint(out, "latest") == out / "checkpoint-4"
    with pytest.raises(ValueError, match="--resume_from_checkpoint.*incomplete"):
        resolve_resume_checkpoint(out, "checkpoint-6")
    steps = resume_in_process("train_bar", bar_argv(workdir, tokens, trained_vq, out, *limit), out, "train_bar", 4)
    assert steps == [5, 6]
    assert [p.name for p in out.iterdir() if "checkpoint" in p.name] == ["checkpoint-6"]
    assert_same_checkpoint(bar_reference / "checkpoint-6", out / "checkpoint-6")


def test_checkpoint_marker_detects_missing_and_truncated_files(bar_reference, tmp_path):
    copy = tmp_path / "checkpoint-4"
    shutil.copytree(bar_reference / "checkpoint-4", copy)
    marker = read_checkpoint_marker(copy)
    assert {"model.safetensors", "optimizer.bin", "random_states_0.pkl"} <= set(marker["files"])
    with open(copy / "optimizer.bin", "r+b") as handle:
        handle.truncate(10)
    assert read_checkpoint_marker(copy) is None
    assert resolve_resume_checkpoint(tmp_path, "latest") is None
    (copy / CHECKPOINT_MARKER).unlink()
    assert list_checkpoints(tmp_path, complete_only=True) == []


def test_checkpoint_checksum_detects_a_flipped_byte(bar_reference, tmp_path):
    """Same size, other bytes: the marker's sizes cannot see it, its SHA-256 can; a resume refuses it by name."""
    copy = tmp_path / "checkpoint-4"
    shutil.copytree(bar_reference / "checkpoint-4", copy)
    marker = verify_checkpoint(copy)
    assert set(marker["sha256"]) == set(marker["files"]) and all(len(h) == 64 for h in marker["sha256"].values())
    path = copy / "optimizer.bin"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert read_checkpoint_marker(copy) is not None  # sizes unchanged: still looks complete
    with pytest.raises(CorruptCheckpointError, match=r"optimizer\.bin.*corrupt"):
        verify_checkpoint(copy)

    class Accelerator:  # what resume_training_state uses of an accelerate Accelerator
        printed: list = []

        def print(self, message):
            self.printed.append(message)

        def load_state(self, path):
            raise AssertionError("a corrupt checkpoint must not be loaded")

    with pytest.raises(CorruptCheckpointError, match=r"checkpoint-4/optimizer\.bin"):
        resume_training_state(Accelerator(), tmp_path, "latest")


def test_resume_latest_without_checkpoint_says_so(tmp_path, caplog):
    class Accelerator:
        def __init__(self):
            self.printed = []

        def print(self, message):
            self.printed.append(message)

    accelerator = Accelerator()
    with caplog.at_level("INFO", logger="bar_hf.training.checkpoints"):
        progress = resume_training_state(accelerator, tmp_path, "latest")
    assert progress.state_dict() == TrainingProgress().state_dict()
    message = f"no checkpoint found in {tmp_path}, starting from step 0"
    assert accelerator.printed == [message] and message in caplog.text
    # without --resume_from_checkpoint: a fresh run, nothing to say
    silent = Accelerator()
    resume_training_state(silent, tmp_path, None)
    assert silent.printed == []


@pytest.mark.slow
@pytest.mark.parametrize("streaming", [False, True], ids=["map", "streaming"])
def test_train_vq_exact_resume_after_sigkill_mid_epoch(workdir, streaming):  # noqa: F811
    # streaming: 18 images in batches of 4 make 5 batches per epoch (the last one of 2), so checkpoint-6 is mid-epoch
    tag = "stream" if streaming else "map"

    def args(out):
        return [
            "--train_data_dir", str(workdir / "images"), "--model_config", str(workdir / "vq.json"),
            "--output_dir", str(out), "--train_batch_size", "4", "--checkpointing_steps", "2", "--use_ema",
            "--random_flip", "--random_crop", "--resize_to", "18", "--max_train_steps", "8" if streaming else "6",
            "--logging_steps", "1",
        ] + (["--streaming"] if streaming else [])  # fmt: skip

    run_in_process("train_bar_vq", args(workdir / f"vq_ref_{tag}"))
    out = workdir / f"vq_mid_{tag}"
    # killed as it was about to write the last checkpoint: the steps since the one before are lost
    killed = run_killed("before-checkpoint", 8 if streaming else 4, "train_bar_vq", args(out))
    assert killed.returncode == -9, killed.stderr[-3000:]
    last = read_checkpoint_marker(out / ("checkpoint-6" if streaming else "checkpoint-2"))
    assert (last["epoch"], last["batches_in_epoch"]) == ((1, 1) if streaming else (0, 2))  # mid-epoch
    steps = resume_in_process("train_bar_vq", args(out), out, "train_bar_vq", last["global_step"])
    assert steps == ([7, 8] if streaming else [3, 4, 5, 6])
    for step in (8,) if streaming else (4, 6):
        a, b = workdir / f"vq_ref_{tag}" / f"checkpoint-{step}", workdir / f"vq_mid_{tag}" / f"checkpoint-{step}"
        assert_same_checkpoint(a, b)
        ema_a, ema_b = (torch.load(p / "custom_checkpoint_1.pkl", weights_only=False) for p in (a, b))
        assert all(torch.equal(x, y) for x, y in zip(ema_a["shadow_params"], ema_b["shadow_params"]))
    wa = load_file(workdir / f"vq_ref_{tag}" / "vqvae" / "diffusion_pytorch_model.safetensors")
    wb = load_file(workdir / f"vq_mid_{tag}" / "vqvae" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_pretokenize_exact_after_sigkill(workdir, tokens, trained_vq):  # noqa: F811
    out = workdir / "tokens_killed"
    args = [
        "--vqvae_model_name_or_path", str(trained_vq), "--train_data_dir", str(workdir / "images"),
        "--output_dir", str(out), "--batch_size", "5", "--shard_size", "7",
    ]  # fmt: skip
    killed = run_killed("shard", 1, "pretokenize", args)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert sorted(p.name for p in (out / "shards").glob("shard-*")) == ["shard-00000", "shard-00001"]
    assert not (out / "metadata.json").exists()  # an unfinished folder is recognisable
    run_in_process("pretokenize", args)
    assert json.loads((out / "metadata.json").read_text()) == json.loads((tokens / "metadata.json").read_text())
    a, b = (datasets.load_from_disk(str(p / "dataset")) for p in (tokens, out))
    assert a.to_dict() == b.to_dict()
    # resuming into the same folder with other settings is refused instead of mixing data
    pretokenize = load_script("pretokenize")
    with pytest.raises(ValueError, match="other settings.*no_flip"):
        pretokenize.main(pretokenize.parse_args([*args, "--no_flip"]))


# ------------------------------------------------------------------------------------------ validation, data errors
def bar_args(workdir, tokens, trained_vq, out, *extra):  # noqa: F811
    train_bar = load_script("train_bar")
    return train_bar, train_bar.parse_args(
        [
            "--pretokenized_dataset",
            str(tokens),
            "--vqvae_model_name_or_path",
            str(trained_vq),
            "--model_config",
            str(workdir / "bar.json"),
            "--output_dir",
            str(out),
            "--train_batch_size",
            "4",
            "--max_train_steps",
            "2",
            "--checkpointing_steps",
            "1",
            *extra,
        ]  # fmt: skip
    )


def test_train_bar_sampling_flags_fail_before_training(workdir, tokens, trained_vq, tmp_path):  # noqa: F811
    train_bar, args = bar_args(workdir, tokens, trained_vq, tmp_path / "run", "--tokens_allocation", "[3,3,3]")
    with pytest.raises(ValueError, match="--tokens_allocation"):
        train_bar.main(args)
    assert not list(tmp_path.glob("run/checkpoint-*"))  # nothing trained


@pytest.mark.parametrize("script", ["train_bar", "train_bar_vq"])
def test_batch_larger_than_dataset_is_an_error(script, workdir, tokens, trained_vq, tmp_path):  # noqa: F811
    if script == "train_bar":
        module, args = bar_args(workdir, tokens, trained_vq, tmp_path / "run", "--train_batch_size", "64")
    else:
        module = load_script(script)
        args = module.parse_args(
            ["--train_data_dir", str(workdir / "images"), "--model_config", str(workdir / "vq.json"),
             "--output_dir", str(tmp_path / "run"), "--train_batch_size", "64", "--max_train_steps", "2"]
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"--train_batch_size.*\(64\).*\(18 "):
        module.main(args)


@pytest.mark.parametrize(
    "script,flag,value",
    [
        ("train_bar", "--learning_rate", "nan"),
        ("train_bar", "--train_batch_size", "0"),
        ("train_bar", "--checkpointing_steps", "0"),
        ("train_bar", "--guidance_scale", "-1"),
        ("train_bar", "--tokens_allocation", "notjson"),
        ("train_bar", "--adam_beta2", "1.5"),
        ("train_bar_vq", "--ema_decay", "2"),
        ("train_bar_vq", "--gradient_accumulation_steps", "0"),
        ("train_bar_vq", "--l1_weight", "inf"),
        ("pretokenize", "--shard_size", "0"),
        ("pretokenize", "--batch_size", "-3"),
    ],
)
def test_bad_flags_are_rejected_up_front(script, flag, value, capsys):
    module = load_script(script)
    base = {
        "train_bar": [
            "--use_dummy_data",
            "--vqvae_model_name_or_path",
            "x",
            "--model_config",
            "x",
            "--output_dir",
            "o",
        ],
        "train_bar_vq": ["--use_dummy_data", "--model_config", "x", "--output_dir", "o"],
        "pretokenize": ["--use_dummy_data", "--vqvae_model_name_or_path", "x", "--output_dir", "o"],
    }[script]
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args([*base, flag, value])
    assert exit_info.value.code == 2 and flag in capsys.readouterr().err
    args = module.parse_args(base)  # the programmatic path raises ValueError
    setattr(args, flag[2:], type(getattr(args, flag[2:]) or "")(value) if flag != "--tokens_allocation" else value)
    with pytest.raises(ValueError, match=flag):
        module.validate_args(args)


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory):
    """A `save_to_disk` dataset whose image column is called `img` and that has no label column."""
    rng = np.random.default_rng(0)
    from PIL import Image

    images = [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(8)]
    folder = tmp_path_factory.mktemp("unlabelled") / "data"
    datasets.Dataset.from_dict({"img": images}, features=datasets.Features({"img": datasets.Image()})).save_to_disk(
        str(folder)
    )
    return folder


def test_pretokenize_without_labels_needs_unconditional(unlabelled, trained_vq, tmp_path):  # noqa: F811
    pretokenize = load_script("pretokenize")
    base = ["--vqvae_model_name_or_path", str(trained_vq), "--dataset_name", str(unlabelled), "--batch_size", "4"]
    with pytest.raises(ValueError, match="no column 'image'.*--image_column"):
        pretokenize.main(pretokenize.parse_args([*base, "--output_dir", str(tmp_path / "a")]))
    base += ["--image_column", "img"]
    with pytest.raises(ValueError, match="no column 'label'.*--label_column.*--unconditional"):
        pretokenize.main(pretokenize.parse_args([*base, "--output_dir", str(tmp_path / "b")]))
    assert not (tmp_path / "b" / "dataset").exists()
    pretokenize.main(pretokenize.parse_args([*base, "--output_dir", str(tmp_path / "c"), "--unconditional"]))
    metadata = json.loads((tmp_path / "c" / "metadata.json").read_text())
    assert metadata["unconditional"] is True and metadata["label_names"] is None and metadata["num_images"] == 8


@pytest.mark.parametrize("script", ["train_bar", "train_bar_vq"])
def test_missing_image_column_names_the_flag(script, unlabelled, workdir, trained_vq, tmp_path):  # noqa: F811
    module = load_script(script)
    common = ["--dataset_name", str(unlabelled), "--output_dir", str(tmp_path / "run"), "--max_train_steps", "1"]
    if script == "train_bar":
        common += ["--vqvae_model_name_or_path", str(trained_vq), "--model_config", str(workdir / "bar.json")]
    else:
        common += ["--model_config", str(workdir / "vq.json")]
    with pytest.raises(ValueError, match="no column 'image'.*--image_column"):
        module.main(module.parse_args(common))
    if script == "train_bar":
        with pytest.raises(ValueError, match="no column 'label'.*--label_column"):
            module.main(module.parse_args([*common, "--image_column", "img"]))


def test_train_bar_rejects_tokens_of_another_tokenizer(workdir, tokens, trained_vq, tmp_path):  # noqa: F811
    torch.manual_seed(123)
    other = BARVQModel(**VQ_CONFIG)
    other.save_pretrained(tmp_path / "other_vq")
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(BARVQModel.from_pretrained(trained_vq))
    assert tokenizer_fingerprint(BARVQModel.from_pretrained(tmp_path / "other_vq")) == tokenizer_fingerprint(other)
    train_bar, args = bar_args(workdir, tokens, tmp_path / "other_vq", tmp_path / "run")
    with pytest.raises(ValueError, match="another tokenizer.*--vqvae_model_name_or_path"):
        train_bar.main(args)


def write_idx(path, array: np.ndarray) -> None:
    header = (0x0800 | array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_dir_flag(tmp_path):
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (5, 28, 28)))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([0, 9, 3, 3, 1]))
    dataset = load_image_dataset("fashion_mnist_local", fashion_mnist_dir=tmp_path)
    assert len(dataset) == 5 and dataset["label"] == [0, 9, 3, 3, 1]
    required = {
        "train_bar": ["--vqvae_model_name_or_path", "x", "--model_config", "x"],
        "train_bar_vq": ["--model_config", "x"],
        "pretokenize": ["--vqvae_model_name_or_path", "x"],
    }
    for script, extra in required.items():
        argv = ["--dataset_name", "fashion_mnist_local", "--fashion_mnist_dir", str(tmp_path), "--output_dir", "o"]
        assert load_script(script).parse_args(argv + extra).fashion_mnist_dir == str(tmp_path)
        assert load_script(script).parse_args(argv[:2] + argv[4:] + extra).fashion_mnist_dir == DEBIAN_FASHION_MNIST_DIR
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_image_dataset("fashion_mnist_local", fashion_mnist_dir=tmp_path / "nowhere")


def test_train_bar_push_to_hub_uploads_model_card(workdir, tokens, trained_vq, tmp_path, monkeypatch):  # noqa: F811
    from hub_server import HubStandIn
    from huggingface_hub import ModelCard
    from test_hub import _point_client_at

    server = HubStandIn().start()
    _point_client_at(monkeypatch, server.url, tmp_path / "hf-cache")
    try:
        train_bar, args = bar_args(
            workdir, tokens, trained_vq, tmp_path / "run", "--push_to_hub", "--hub_model_id", "user/tiny-trained"
        )
        train_bar.main(args)
        files = server.files("user/tiny-trained")
    finally:
        server.stop()
    assert {"README.md", "model_index.json", "transformer/model.safetensors"} <= set(files)
    card = ModelCard(files["README.md"].decode())
    assert card.data.library_name == "diffusers" and 'BARPipeline.from_pretrained("user/tiny-trained")' in card.text


@pytest.mark.parametrize("script", ["train_bar", "train_bar_vq"])
def test_unreadable_model_config_names_the_flag(script, trained_vq, tmp_path):  # noqa: F811
    module = load_script(script)
    (tmp_path / "bad.json").write_text("{not json")
    argv = ["--use_dummy_data", "--output_dir", str(tmp_path / "run"), "--max_train_steps", "1"]
    if script == "train_bar":
        argv += ["--vqvae_model_name_or_path", str(trained_vq)]
    for config in (tmp_path / "missing.json", tmp_path / "bad.json"):
        with pytest.raises(ValueError, match="--model_config"):
            module.main(module.parse_args([*argv, "--model_config", str(config)]))
