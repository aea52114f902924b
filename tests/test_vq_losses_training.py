"""`train_bar_vq.py` with the perceptual and adversarial terms: warm-up and G/D alternation, exact resume after a
SIGKILL with the discriminator on, decoder-only fine-tuning keeps the tokens, clear errors, two processes."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from example_scripts import EXAMPLES, load_script, one_thread_env, run_killed, script_path
from PIL import Image
from safetensors.torch import load_file
from test_examples import VQ_CONFIG
from test_training_reliability import assert_same_checkpoint, resume_in_process, run_in_process
from test_vq_losses import FMNIST_CLASSIFIER, tiny_convnext, tiny_vit

from bar_hf import BARVQModel
from bar_hf.training.checkpoints import read_checkpoint_marker


@pytest.fixture(scope="module")
def gan_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("vq_gan")
    rng = np.random.default_rng(0)
    (root / "images" / "a").mkdir(parents=True)
    for i in range(18):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / "images" / "a" / f"{i}.png")
    (root / "vq.json").write_text(json.dumps(VQ_CONFIG))
    torch.manual_seed(0)
    tiny_vit().save_pretrained(root / "vit")
    tiny_convnext().save_pretrained(root / "convnext")
    return root


def gan_args(root, out, *extra):
    """18 images, batch 4 (4 batches per epoch), D from step 3: G G G D G D G ..."""
    return [
        "--train_data_dir", root / "images", "--model_config", root / "vq.json", "--output_dir", out,
        "--train_batch_size", "4", "--max_train_steps", "6", "--checkpointing_steps", "2", "--logging_steps", "1",
        "--random_flip", "--random_crop", "--resize_to", "18", "--use_ema",
        "--perceptual_weight", "1.1", "--lpips_weight", "0", "--logit_model", root / "convnext",
        "--logit_image_size", "32", "--adversarial_weight", "0.05", "--disc_start_step", "3",
        "--disc_model", root / "vit", "--disc_image_size", "16", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def gan_reference(gan_dir):
    run_in_process("train_bar_vq", gan_args(gan_dir, gan_dir / "ref"))
    return gan_dir / "ref"


def test_discriminator_warm_up_and_alternation(gan_reference):
    records = [json.loads(line) for line in (gan_reference / "logs" / "train_bar_vq" / "metrics.jsonl").open()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    for record in records[:3]:  # before --disc_start_step: generator steps without the adversarial term
        assert "adversarial" not in record and "disc_loss" not in record
        assert {"l1", "l2", "logit", "perceptual", "loss"} <= set(record)
    assert "disc_loss" in records[3] and "l1" not in records[3]  # step index 3: D
    assert "adversarial" in records[4] and "disc_loss" not in records[4]  # then G with the GAN term
    assert "disc_loss" in records[5]
    for record in records:
        assert all(np.isfinite(v) for k, v in record.items() if k != "step")
    # no discriminator update before the start step: its optimizer has no state at checkpoint-2, some at checkpoint-4
    assert torch.load(gan_reference / "checkpoint-2" / "optimizer_1.bin", weights_only=True)["state"] == {}
    assert torch.load(gan_reference / "checkpoint-4" / "optimizer_1.bin", weights_only=True)["state"] != {}
    heads_2 = load_file(gan_reference / "checkpoint-2" / "model_1.safetensors")
    heads_4 = load_file(gan_reference / "checkpoint-4" / "model_1.safetensors")
    changed = [k for k in heads_2 if k.startswith("heads.") and not torch.equal(heads_2[k], heads_4[k])]
    frozen = [k for k in heads_2 if k.startswith("backbone.") and not torch.equal(heads_2[k], heads_4[k])]
    assert changed and not frozen


@pytest.mark.slow
def test_exact_resume_after_sigkill_with_discriminator(gan_dir, gan_reference):
    out = gan_dir / "killed"
    killed = run_killed("before-checkpoint", 6, "train_bar_vq", gan_args(gan_dir, out))  # step 5 (D) and 6 (G) lost
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert read_checkpoint_marker(out / "checkpoint-4")["global_step"] == 4
    assert resume_in_process("train_bar_vq", gan_args(gan_dir, out), out, "train_bar_vq", 4) == [5, 6]
    a, b = gan_reference / "checkpoint-6", out / "checkpoint-6"
    assert_same_checkpoint(a, b)
    da, db = load_file(a / "model_1.safetensors"), load_file(b / "model_1.safetensors")
    assert da.keys() == db.keys() and all(torch.equal(da[k], db[k]) for k in da)  # incl. spectral-norm u, v
    oa, ob = (torch.load(p / "optimizer_1.bin", weights_only=True) for p in (a, b))
    for index, state in oa["state"].items():
        assert all(torch.equal(v, ob["state"][index][k]) for k, v in state.items())
    assert torch.load(a / "scheduler_1.bin", weights_only=True) == torch.load(b / "scheduler_1.bin", weights_only=True)
    wa = load_file(gan_reference / "vqvae" / "diffusion_pytorch_model.safetensors")
    wb = load_file(out / "vqvae" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_train_decoder_only_keeps_the_tokens(gan_dir, gan_reference):
    start = gan_reference / "vqvae"
    out = gan_dir / "decoder_only"
    args = [
        "--train_data_dir", gan_dir / "images", "--pretrained_model_name_or_path", start, "--output_dir", out,
        "--train_batch_size", "4", "--max_train_steps", "3", "--learning_rate", "1e-2", "--lr_warmup_steps", "0",
        "--train_decoder_only", "--use_ema", "--ema_decay", "0.5",
    ]  # fmt: skip
    run_in_process("train_bar_vq", args)
    before, after = BARVQModel.from_pretrained(start), BARVQModel.from_pretrained(out / "vqvae")
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        assert torch.equal(before.encode(x).latents, after.encode(x).latents)  # bit-identical token mapping
        assert torch.equal(before.encode_to_bits(x), after.encode_to_bits(x))
    sb, sa = before.state_dict(), after.state_dict()
    assert any(not torch.equal(sb[k], sa[k]) for k in sb if k.startswith("decoder."))


def test_fashion_mnist_classifier_as_logit_model(gan_dir):
    train_vq = load_script("train_bar_vq")
    args = train_vq.parse_args(
        ["--use_dummy_data", "--model_config", "x", "--output_dir", "o", "--perceptual_weight", "1",
         "--logit_model", str(FMNIST_CLASSIFIER), "--logit_image_size", "32", "--lpips_weight", "0"]
    )  # fmt: skip
    loss_fn = train_vq.build_logit_loss(args)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    assert loss_fn.normalization == "none" and loss_fn(x, x).item() == 0.0


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--adversarial_weight", "0.05", "--disc_model", "no-such-org/no-such-vit"], "--disc_model"),
        (["--perceptual_weight", "1", "--lpips_weight", "0", "--logit_model", "no-such-org/no-such-net"],
         "--logit_model"),
        (["--perceptual_weight", "1", "--lpips_weight", "0", "--logit_model", "missing.safetensors"], "--logit_model"),
        (["--adversarial_weight", "0.05", "--disc_model", "random", "--disc_image_size", "20"], "--disc_image_size"),
    ],
)  # fmt: skip
def test_unavailable_backbones_name_the_flag(flags, match, gan_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    train_vq = load_script("train_bar_vq")
    argv = ["--use_dummy_data", "--model_config", str(gan_dir / "vq.json"), "--output_dir", str(tmp_path)]
    with pytest.raises(ValueError, match=match):
        train_vq.main(train_vq.parse_args([*argv, "--max_train_steps", "1", *flags]))


def test_lpips_unavailable_names_the_flag(gan_dir, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "lpips", None)
    train_vq = load_script("train_bar_vq")
    argv = ["--use_dummy_data", "--model_config", str(gan_dir / "vq.json"), "--output_dir", str(tmp_path)]
    with pytest.raises(ValueError, match="--lpips_weight"):
        train_vq.main(train_vq.parse_args([*argv, "--perceptual_weight", "1.1"]))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--adversarial_weight", "0.05", "--gradient_accumulation_steps", "2"], "--gradient_accumulation_steps"),
        (["--train_decoder_only"], "--pretrained_model_name_or_path"),
        (["--perceptual_weight", "1", "--lpips_weight", "0", "--logit_weight", "0"], "--perceptual_weight"),
        (["--disc_learning_rate", "0"], "--disc_learning_rate"),
        (["--disc_adam_beta2", "1"], "--disc_adam_beta2"),
    ],
)
def test_bad_gan_flags_are_rejected_up_front(flags, message, capsys):
    train_vq = load_script("train_bar_vq")
    with pytest.raises(SystemExit) as error:
        train_vq.parse_args(["--use_dummy_data", "--model_config", "x", "--output_dir", "o", *flags])
    assert error.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_with_discriminator(gan_dir):
    out = gan_dir / "ddp"
    argv = [str(a) for a in gan_args(gan_dir, out)]
    argv[argv.index("--train_batch_size") + 1] = "2"
    argv[argv.index("--max_train_steps") + 1] = "5"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(script_path("train_bar_vq")), *argv]  # fmt: skip
    environment = one_thread_env({"ACCELERATE_USE_CPU": "1"})
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    marker = read_checkpoint_marker(out / "checkpoint-4")
    assert {"random_states_0.pkl", "random_states_1.pkl", "model_1.safetensors", "optimizer_1.bin"} <= set(
        marker["files"]
    )
    records = [json.loads(line) for line in (out / "logs" / "train_bar_vq" / "metrics.jsonl").open()]
    assert "disc_loss" in records[3] and "adversarial" in records[4]
    assert BARVQModel.from_pretrained(out / "vqvae").config.num_bits == VQ_CONFIG["num_bits"]


@pytest.mark.parametrize(
    "script", ["imagenet_tokenizer_16bits.sh", "imagenet_tokenizer_10bits_512.sh", "fashion_mnist_tokenizer_ft.sh"]
)
def test_recipe_scripts_use_existing_flags(script):
    """The tokenizer recipes' `train_bar_vq.py` command lines parse and validate (flags exist, values are valid)."""
    text = (EXAMPLES / "tokenizer" / "configs" / script).read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if "examples/tokenizer/train_bar_vq.py" in line)
    argv = line.split("examples/tokenizer/train_bar_vq.py", 1)[1].replace('"$@"', "").replace('"$OUT"', "o")
    argv = argv.replace('"$STEPS"', "900").replace('"$LOSS_CLASSIFIER"', "c.safetensors").split()
    args = load_script("train_bar_vq").parse_args(argv)
    if script.startswith("imagenet"):
        assert (args.perceptual_weight, args.lpips_weight, args.logit_weight) == (1.1, 1.0, 0.1)
        assert (args.adversarial_weight, args.disc_start_step, args.disc_image_size) == (0.05, 100_000, 224)
    else:
        assert args.train_decoder_only and args.adversarial_weight == 0 and args.logit_model.endswith(".safetensors")
