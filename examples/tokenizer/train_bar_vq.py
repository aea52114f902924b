#!/usr/bin/env python
"""Train the BAR-FSQ tokenizer (`BARVQModel`) on a `datasets` image dataset with accelerate.

    accelerate launch examples/tokenizer/train_bar_vq.py --dataset_name fashion_mnist_local \
        --model_config examples/tokenizer/configs/vq_fashion_mnist.json --output_dir runs/vq --max_train_steps 6000

Losses (docs/method.md §2.6): `--l1_weight`·L1 + `--l2_weight`·MSE always; `--distill_weight` (SigLIP2 feature
distillation through the decoder's projector) and `--gram_weight` (VGG16 Gram loss) need pretrained networks: they are
downloaded for online users and fail with an error naming the missing weights offline (never skipped silently).
`--perceptual_weight` adds the authors' perceptual term `(--lpips_weight·LPIPS + --logit_weight·logit MSE) / (sum of
the two)` and `--adversarial_weight` the DINO-feature discriminator's hinge GAN term from `--disc_start_step` on, with
generator and discriminator updates alternating batch by batch (both count as a global step); see
`bar_hf.training.losses` and `bar_hf.training.discriminator`. `--train_decoder_only` freezes the encoder and the quantizer's input
projection, so the token mapping stays that of `--pretrained_model_name_or_path` (the authors' `_ft` tokenizers).
The final model is the EMA copy (decay `--ema_decay`, warm-up `min(decay, (1+s)/(10+s))`, as the authors).
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from bar_hf import BARVQModel
from bar_hf.models.vq_model import FSQ_SHIFT
from bar_hf.training.checkpoints import resume_training_state, save_training_checkpoint, training_batches
from bar_hf.training.data import (
    DEBIAN_FASHION_MNIST_DIR,
    AugmentationState,
    dummy_image_dataset,
    image_to_tensor,
    load_image_dataset,
    random_crop_flip,
)
from bar_hf.training.discriminator import (
    DINODiscriminator,
    generator_adversarial_loss,
    hinge_discriminator_loss,
    quantize_to_8_bits,
    random_dino_vits8,
)
from bar_hf.training.losses import ClassifierLogitLoss, LPIPSLoss, PerceptualLoss, load_image_classifier
from bar_hf.training.utils import (
    AT_LEAST_0,
    AT_LEAST_1,
    BETA,
    POSITIVE,
    TRAINING_FLAG_RULES,
    UNIT_INTERVAL,
    check_columns,
    check_flags,
    cosine_with_warmup,
    create_accelerator,
    parse_and_validate,
    read_json_flag,
    upload_to_hub,
)

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    data = parser.add_argument_group("data")
    data.add_argument("--dataset_name", default=None, help="Hub dataset, save_to_disk folder or 'fashion_mnist_local'")
    data.add_argument("--dataset_config_name", default=None)
    data.add_argument("--train_data_dir", default=None, help="an imagefolder directory")
    data.add_argument(
        "--fashion_mnist_dir", default=DEBIAN_FASHION_MNIST_DIR, help="IDX files read by --dataset_name fashion_mnist_local"
    )
    data.add_argument("--image_column", default="image")
    data.add_argument("--streaming", action="store_true")
    data.add_argument("--use_dummy_data", action="store_true", help="random images (smoke tests)")
    data.add_argument("--cache_dir", default=None)
    data.add_argument("--resize_to", type=int, default=None, help="resize before random crop (default: resolution)")
    data.add_argument("--random_crop", action="store_true")
    data.add_argument("--random_flip", action="store_true")
    data.add_argument("--dataloader_num_workers", type=int, default=0)
    model = parser.add_argument_group("model")
    model.add_argument("--model_config", default=None, help="JSON file of BARVQModel init arguments")
    model.add_argument("--pretrained_model_name_or_path", default=None, help="start from a saved BARVQModel")
    model.add_argument(
        "--fsq_bias_init",
        choices=["threshold", "default"],
        default="threshold",
        help="from-scratch models: start in_proj biases at the FSQ threshold (-3.8007) so bits can flip early",
    )
    model.add_argument(
        "--init_encoder_from",
        default=None,
        help="initialise the encoder from a SigLIP2 vision checkpoint (the authors: google/siglip2-so400m-patch16-naflex)",
    )
    model.add_argument(
        "--freeze_encoder_embeddings", action="store_true", help="keep patch/position embeddings frozen (the authors)"
    )
    model.add_argument(
        "--train_decoder_only",
        action="store_true",
        help="freeze the encoder and the quantizer's in_proj (tokens unchanged; needs --pretrained_model_name_or_path)",
    )
    train = parser.add_argument_group("training")
    train.add_argument("--output_dir", required=True)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--train_batch_size", type=int, default=32)
    train.add_argument("--max_train_steps", type=int, default=1000)
    train.add_argument("--gradient_accumulation_steps", type=int, default=1)
    train.add_argument("--learning_rate", type=float, default=1e-4)
    train.add_argument("--min_learning_rate", type=float, default=1e-5)
    train.add_argument("--encoder_lr_mult", type=float, default=0.1, help="lr factor for names containing 'encoder'")
    train.add_argument("--lr_warmup_steps", type=int, default=100)
    train.add_argument("--adam_beta1", type=float, default=0.9)
    train.add_argument("--adam_beta2", type=float, default=0.999)
    train.add_argument("--adam_weight_decay", type=float, default=0.0)
    train.add_argument("--max_grad_norm", type=float, default=1.0)
    train.add_argument("--use_ema", action="store_true")
    train.add_argument("--ema_decay", type=float, default=0.999)
    train.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default="no")
    train.add_argument("--l1_weight", type=float, default=0.1)
    train.add_argument("--l2_weight", type=float, default=1.0)
    train.add_argument("--distill_weight", type=float, default=0.0)
    train.add_argument("--distill_model", default="google/siglip2-so400m-patch16-naflex")
    train.add_argument("--gram_weight", type=float, default=0.0)
    add_perceptual_and_adversarial_args(parser)
    run = parser.add_argument_group("checkpoints and logging")
    run.add_argument("--checkpointing_steps", type=int, default=500)
    run.add_argument("--checkpoints_total_limit", type=int, default=None)
    run.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint folder")
    run.add_argument("--logging_steps", type=int, default=10)
    run.add_argument("--report_to", default=None, help="extra tracker: tensorboard or wandb (optional)")
    run.add_argument("--push_to_hub", action="store_true")
    run.add_argument("--hub_model_id", default=None)
    run.add_argument("--hub_token", default=None)
    return parse_and_validate(parser, argv, validate_args)


def add_perceptual_and_adversarial_args(parser: argparse.ArgumentParser) -> None:
    perc = parser.add_argument_group("perceptual loss (docs/method.md §2.6; the authors: 1.1, 1.0, 0.1)")
    perc.add_argument("--perceptual_weight", type=float, default=0.0, help="weight of the combined perceptual term")
    perc.add_argument("--lpips_weight", type=float, default=1.0, help="LPIPS (VGG16) share of the perceptual term")
    perc.add_argument(
        "--lpips_random_backbone", action="store_true", help="random VGG16 trunk (offline tests; not perceptual)"
    )
    perc.add_argument("--logit_weight", type=float, default=0.1, help="classifier-logit MSE share of the term")
    perc.add_argument(
        "--logit_model",
        default="facebook/convnext-small-224",
        help="transformers image classifier id/folder, or a Fashion-MNIST classifier .safetensors file "
        "(examples/fashion_mnist/fashion_mnist_classifier.py)",
    )
    perc.add_argument("--logit_image_size", type=int, default=224, help="classifier input size (bicubic+antialias)")
    adv = parser.add_argument_group("adversarial loss (docs/method.md §2.6; the authors: 0.05 from step 100k)")
    adv.add_argument("--adversarial_weight", type=float, default=0.0, help="weight of -mean D(x̂) in the G loss")
    adv.add_argument("--disc_start_step", type=int, default=100_000, help="first global step with D and G-adv")
    adv.add_argument(
        "--disc_model", default="facebook/dino-vits8", help="transformers ViTModel id/folder, or 'random' (tests)"
    )
    adv.add_argument("--disc_image_size", type=int, default=224, help="D input size (multiple of the patch size)")
    adv.add_argument("--disc_virtual_batch_size", type=int, default=8, help="BatchNormLocal group size")
    adv.add_argument("--disc_learning_rate", type=float, default=1e-4)
    adv.add_argument(
        "--disc_min_learning_rate", type=float, default=None, help="end of D's cosine (default: --min_learning_rate)"
    )
    adv.add_argument("--disc_adam_beta1", type=float, default=0.9)
    adv.add_argument("--disc_adam_beta2", type=float, default=0.999)
    adv.add_argument("--disc_weight_decay", type=float, default=0.0)


#: Numeric flags and their rules (checked before anything is loaded).
FLAG_RULES = {
    **TRAINING_FLAG_RULES,
    "resize_to": AT_LEAST_1,
    "dataloader_num_workers": AT_LEAST_0,
    "encoder_lr_mult": AT_LEAST_0,
    "ema_decay": UNIT_INTERVAL,
    "l1_weight": AT_LEAST_0,
    "l2_weight": AT_LEAST_0,
    "distill_weight": AT_LEAST_0,
    "gram_weight": AT_LEAST_0,
    "perceptual_weight": AT_LEAST_0,
    "lpips_weight": AT_LEAST_0,
    "logit_weight": AT_LEAST_0,
    "logit_image_size": AT_LEAST_1,
    "adversarial_weight": AT_LEAST_0,
    "disc_start_step": AT_LEAST_0,
    "disc_image_size": AT_LEAST_1,
    "disc_virtual_batch_size": AT_LEAST_1,
    "disc_learning_rate": POSITIVE,
    "disc_min_learning_rate": AT_LEAST_0,
    "disc_adam_beta1": BETA,
    "disc_adam_beta2": BETA,
    "disc_weight_decay": AT_LEAST_0,
}


def validate_args(args: argparse.Namespace) -> None:
    """Every flag that can be checked without loading anything; `ValueError` naming the flag otherwise."""
    if not (args.use_dummy_data or args.dataset_name or args.train_data_dir):
        raise ValueError("one of --dataset_name, --train_data_dir or --use_dummy_data is required")
    if not (args.model_config or args.pretrained_model_name_or_path):
        raise ValueError("one of --model_config or --pretrained_model_name_or_path is required")
    check_flags(args, FLAG_RULES)
    if args.perceptual_weight > 0 and args.lpips_weight + args.logit_weight <= 0:
        raise ValueError("`--perceptual_weight` > 0 needs `--lpips_weight` or `--logit_weight` > 0.")
    if args.adversarial_weight > 0 and args.gradient_accumulation_steps != 1:
        raise ValueError(
            "`--adversarial_weight` > 0 alternates G and D updates batch by batch and needs "
            f"`--gradient_accumulation_steps` 1, got {args.gradient_accumulation_steps}."
        )
    if args.train_decoder_only and not args.pretrained_model_name_or_path:
        raise ValueError("`--train_decoder_only` needs `--pretrained_model_name_or_path` (the tokenizer to keep).")


def build_model(args: argparse.Namespace) -> BARVQModel:
    if args.pretrained_model_name_or_path:
        return BARVQModel.from_pretrained(args.pretrained_model_name_or_path)
    config = read_json_flag(args.model_config, "--model_config")
    model = BARVQModel(**config)
    if args.fsq_bias_init == "threshold":
        with torch.no_grad():
            model.quantize.in_proj.bias.fill_(-FSQ_SHIFT)
    if args.init_encoder_from:
        load_siglip2_encoder(model, args.init_encoder_from)
    return model


def load_siglip2_encoder(model: BARVQModel, name_or_path: str) -> None:
    """Copy a SigLIP2 (naflex) vision tower into `model.encoder` (same module names; the pooling head is dropped)."""
    from transformers import Siglip2VisionModel

    try:
        siglip = Siglip2VisionModel.from_pretrained(name_or_path)
    except OSError as error:
        raise ValueError(f"`--init_encoder_from` could not load SigLIP2 weights '{name_or_path}': {error}") from error
    state = {k: v for k, v in siglip.state_dict().items() if not k.startswith("head.")}
    missing, unexpected = model.encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"SigLIP2 checkpoint '{name_or_path}' does not match the encoder config: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}."
        )


def build_dataloader(args: argparse.Namespace, model: BARVQModel):
    size = model.config.sample_size if isinstance(model.config.sample_size, int) else model.config.sample_size[0]
    channels = model.config.in_channels
    load_size = args.resize_to or size
    if args.use_dummy_data:
        dataset = dummy_image_dataset(64, load_size + 4, channels)
    else:
        dataset = load_image_dataset(
            args.dataset_name,
            args.dataset_config_name,
            args.train_data_dir,
            streaming=args.streaming,
            cache_dir=args.cache_dir,
            fashion_mnist_dir=args.fashion_mnist_dir,
        )
    check_columns(dataset, {"--image_column": args.image_column})
    if args.resize_to is not None and args.resize_to < size:
        raise ValueError(f"`--resize_to` ({args.resize_to}) must be >= the model resolution ({size}).")
    if not args.streaming and len(dataset) < args.train_batch_size:
        raise ValueError(
            f"`--train_batch_size` ({args.train_batch_size}) is larger than the dataset ({len(dataset)} images): "
            "incomplete batches are dropped, so an epoch would have no batch."
        )

    def transform(examples):
        return {"pixel_values": [image_to_tensor(img, load_size, channels) for img in examples[args.image_column]]}

    if args.streaming:
        dataset = dataset.shuffle(seed=args.seed, buffer_size=1000).map(transform, batched=True)
        dataset = dataset.select_columns(["pixel_values"]).with_format("torch")
        return torch.utils.data.DataLoader(dataset, batch_size=args.train_batch_size), size
    dataset.set_transform(transform)
    return (
        torch.utils.data.DataLoader(
            dataset,
            batch_size=args.train_batch_size,
            shuffle=True,
            num_workers=args.dataloader_num_workers,
            drop_last=True,
            collate_fn=lambda rows: {"pixel_values": torch.stack([r["pixel_values"] for r in rows])},
        ),
        size,
    )


def build_extra_losses(args: argparse.Namespace, model: BARVQModel, device):
    """Pretrained-network losses; raise with the name of the missing weights when they cannot be had."""
    extra = {}
    if args.distill_weight > 0:
        if model.config.distill_projector_dim is None:
            raise ValueError("`--distill_weight` > 0 needs a model config with `distill_projector_dim` set.")
        try:
            from transformers import Siglip2VisionModel

            teacher = Siglip2VisionModel.from_pretrained(args.distill_model).to(device).eval().requires_grad_(False)
        except OSError as error:
            raise ValueError(
                f"`--distill_weight` needs the pretrained SigLIP2 weights '{args.distill_model}', which could not be "
                f"loaded (offline?): {error}"
            ) from error
        extra["distill"] = teacher
    if args.gram_weight > 0:
        try:
            from torchvision.models import VGG16_Weights, vgg16

            vgg = vgg16(weights=VGG16_Weights.IMAGENET1K_V1).features.to(device).eval().requires_grad_(False)
        except Exception as error:  # ImportError (no torchvision) or a failed download
            raise ValueError(
                "`--gram_weight` needs torchvision's pretrained VGG16 weights (IMAGENET1K_V1), which could not be "
                f"loaded (torchvision missing or offline?): {error}"
            ) from error
        extra["gram"] = vgg
    if args.perceptual_weight > 0:
        lpips = build_lpips_loss(args) if args.lpips_weight > 0 else None
        logit = build_logit_loss(args) if args.logit_weight > 0 else None
        extra["perceptual"] = PerceptualLoss(lpips, logit, args.lpips_weight, args.logit_weight).to(device)
    return extra


def build_lpips_loss(args: argparse.Namespace) -> LPIPSLoss:
    try:
        return LPIPSLoss(pretrained_backbone=not args.lpips_random_backbone)
    except Exception as error:  # ImportError (lpips / torchvision) or a failed VGG16 download
        raise ValueError(
            f"`--lpips_weight` {args.lpips_weight} > 0 needs the `lpips` package, a torchvision matching torch and "
            f"(unless --lpips_random_backbone) torchvision's VGG16 ImageNet weights; use --lpips_weight 0 without them: "
            f"{error}"
        ) from error


def build_logit_loss(args: argparse.Namespace) -> ClassifierLogitLoss:
    """`--logit_model`: a `.safetensors` Fashion-MNIST classifier (inputs stay in [-1, 1]) or a transformers image
    classifier (ImageNet normalisation, the authors' ConvNeXt-S)."""
    name = args.logit_model
    if name.endswith(".safetensors"):
        if not os.path.isfile(name):
            raise ValueError(f"`--logit_model` {name!r} is not a file (a Fashion-MNIST classifier .safetensors).")
        from bar_hf.evaluation.fashion_mnist_classifier import load_classifier

        try:
            classifier = load_classifier(name)
        except Exception as error:  # wrong keys or shapes
            raise ValueError(
                f"`--logit_model` {name!r} is not a Fashion-MNIST SmallCNN state dict: {error}"
            ) from error
        return ClassifierLogitLoss(classifier, args.logit_image_size, normalization="none")
    try:
        classifier = load_image_classifier(name)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"`--logit_model` {name!r} could not be loaded as a transformers image classifier (unknown id, or offline "
            f"without it in the cache): {error}"
        ) from error
    return ClassifierLogitLoss(classifier, args.logit_image_size, normalization="imagenet")


def build_discriminator(args: argparse.Namespace) -> DINODiscriminator:
    """`--disc_model`: a transformers `ViTModel` id/folder (the authors: DINO ViT-S/8) or 'random' (with a warning)."""
    if args.disc_model == "random":
        backbone, pretrained = random_dino_vits8(args.disc_image_size), False
    else:
        from transformers import ViTModel

        try:
            backbone, pretrained = ViTModel.from_pretrained(args.disc_model, add_pooling_layer=False), True
        except (OSError, ValueError) as error:
            raise ValueError(
                f"`--disc_model` {args.disc_model!r} could not be loaded as a transformers ViTModel (unknown id, or "
                f"offline without it in the cache; 'random' gives a random ViT-S/8 for tests): {error}"
            ) from error
    try:
        return DINODiscriminator(
            backbone, args.disc_image_size, virtual_batch_size=args.disc_virtual_batch_size, pretrained=pretrained
        )
    except ValueError as error:
        raise ValueError(
            f"`--disc_image_size` {args.disc_image_size} / `--disc_model` {args.disc_model!r}: {error}"
        ) from error


def build_discriminator_training(args: argparse.Namespace):
    """The discriminator, its AdamW (heads only) and its own cosine schedule over `max_train_steps - disc_start_step`
    global steps (stepped from the start step on). `(None, None, None)` without `--adversarial_weight`."""
    if args.adversarial_weight <= 0:
        return None, None, None
    discriminator = build_discriminator(args)
    optimizer = torch.optim.AdamW(
        [p for p in discriminator.parameters() if p.requires_grad],
        lr=args.disc_learning_rate,
        betas=(args.disc_adam_beta1, args.disc_adam_beta2),
        weight_decay=args.disc_weight_decay,
    )
    min_lr = args.min_learning_rate if args.disc_min_learning_rate is None else args.disc_min_learning_rate
    total = max(1, args.max_train_steps - args.disc_start_step)
    return discriminator, optimizer, cosine_with_warmup(optimizer, 0, total, min_lr)


def is_discriminator_step(args: argparse.Namespace, step: int) -> bool:
    """From `--disc_start_step` on, updates alternate D, G, D, G, ... (0-based global step `step`)."""
    return args.adversarial_weight > 0 and step >= args.disc_start_step and (step - args.disc_start_step) % 2 == 0


def gram_loss(vgg: torch.nn.Module, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Σ over every module output of VGG16 `features` of mean((G_x̂ − G_x)²), G = F·Fᵀ/(C·H·W) (docs/method.md §2.6)."""
    mean = torch.tensor([0.485, 0.456, 0.406], device=target.device)[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225], device=target.device)[None, :, None, None]

    def prepare(x):
        x = (x + 1) / 2
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        return (F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False) - mean) / std

    loss, a, b = 0.0, prepare(reconstruction), prepare(target)
    for layer in vgg:
        a, b = layer(a), layer(b)
        c, h, w = a.shape[1:]
        fa, fb = a.flatten(2), b.flatten(2)
        ga = fa @ fa.transpose(1, 2) / (c * h * w)
        gb = fb @ fb.transpose(1, 2) / (c * h * w)
        loss = loss + (ga - gb).pow(2).mean()
    return loss


def compute_loss(args, model, images, extra, adversarial=None):
    """The generator-side loss and its terms; `adversarial` (a callable on the reconstruction) adds the GAN term."""
    logs = {}
    if "distill" in extra:
        unwrapped = model.module if hasattr(model, "module") else model
        reconstruction, features, _ = unwrapped.forward_with_distillation(images)
        with torch.no_grad():
            pixel_values = unwrapped.patchify_images(images)
            shapes = torch.tensor([unwrapped.grid_size], device=images.device).expand(images.shape[0], 2)
            target = extra["distill"](pixel_values, torch.ones(pixel_values.shape[:2], device=images.device), shapes)
        logs["distill"] = F.mse_loss(features.float(), target.last_hidden_state.float())
    else:
        reconstruction = model(images).sample
    logs["l1"] = F.l1_loss(reconstruction.float(), images.float())
    logs["l2"] = F.mse_loss(reconstruction.float(), images.float())
    loss = args.l1_weight * logs["l1"] + args.l2_weight * logs["l2"]
    if "distill" in logs:
        loss = loss + args.distill_weight * logs["distill"]
    if "gram" in extra:
        logs["gram"] = gram_loss(extra["gram"], reconstruction.float(), images.float())
        loss = loss + args.gram_weight * logs["gram"]
    if "perceptual" in extra:
        logs["perceptual"], terms = extra["perceptual"](reconstruction.float(), images.float())
        logs.update(terms)
        loss = loss + args.perceptual_weight * logs["perceptual"]
    if adversarial is not None:
        logs["adversarial"] = adversarial(reconstruction)
        loss = loss + args.adversarial_weight * logs["adversarial"]
    return loss, logs


def build_optimizer(args: argparse.Namespace, model: BARVQModel) -> torch.optim.AdamW:
    """AdamW; parameters whose name contains 'encoder' at `--encoder_lr_mult` x the learning rate."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in trainable if "encoder" in n], "lr": args.learning_rate * args.encoder_lr_mult},
        {"params": [p for n, p in trainable if "encoder" not in n], "lr": args.learning_rate},
    ]
    return torch.optim.AdamW(
        [group for group in groups if group["params"]],
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
    )


def train_step(images, model, args, extra, accelerator, optimizer, lr_scheduler, adversarial=None):
    """One (micro-)batch: forward, losses, backward, optimizer step. Returns `(loss, logged terms)`."""
    with accelerator.accumulate(model):
        loss, logs = compute_loss(args, model, images.to(accelerator.device), extra, adversarial)
        accelerator.backward(loss)
        if accelerator.sync_gradients and args.max_grad_norm:
            accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
    return loss, logs


def adversarial_term(accelerator, discriminator, generator):
    """`reconstruction → -mean D(x̂)` through the unwrapped discriminator with its heads frozen (no D gradients and
    no DDP reduction of D in a generator step)."""
    module = accelerator.unwrap_model(discriminator)

    def term(reconstruction):
        module.heads.requires_grad_(False)
        try:
            return generator_adversarial_loss(module(reconstruction, generator))
        finally:
            module.heads.requires_grad_(True)

    return term


def discriminator_step(images, model, discriminator, args, accelerator, d_optimizer, generator):
    """One D update: hinge loss on the real batch and on its reconstruction (clamped, 8-bit quantized)."""
    images = images.to(accelerator.device)
    with torch.no_grad():
        fake = quantize_to_8_bits(model(images).sample.float())
    logits_real = discriminator(images, generator)
    logits_fake = discriminator(fake, generator)
    loss = hinge_discriminator_loss(logits_real, logits_fake)
    accelerator.backward(loss)
    if args.max_grad_norm:
        accelerator.clip_grad_norm_(discriminator.parameters(), args.max_grad_norm)
    d_optimizer.step()
    d_optimizer.zero_grad()
    logs = {"disc_loss": loss, "disc_logits_real": logits_real.mean(), "disc_logits_fake": logits_fake.mean()}
    return loss, logs


def freeze_token_mapping(model: BARVQModel) -> None:
    """`--train_decoder_only`: the encoder and the quantizer's input projection decide the bits; freeze them."""
    model.encoder.requires_grad_(False)
    model.quantize.in_proj.requires_grad_(False)


def main(args: argparse.Namespace, step_hook=None) -> None:
    """Train and save `<output_dir>/vqvae`. `step_hook(global_step, seconds)`, when given, is called after each
    global step with the wall time of its update (forward, backward, optimizer; not logging or checkpointing)."""
    validate_args(args)
    accelerator, output_dir, repo_id = create_accelerator(args, "train_bar_vq")
    model = build_model(args)
    if args.train_decoder_only:
        freeze_token_mapping(model)
    ema = None
    if args.use_ema:
        ema = EMAModel(
            model.parameters(),
            decay=args.ema_decay,
            use_ema_warmup=False,
            model_cls=BARVQModel,
            model_config=model.config,
        )
    if args.freeze_encoder_embeddings:
        model.encoder.embeddings.requires_grad_(False)
    dataloader, crop = build_dataloader(args, model)
    optimizer = build_optimizer(args, model)
    lr_scheduler = cosine_with_warmup(optimizer, args.lr_warmup_steps, args.max_train_steps, args.min_learning_rate)
    extra = build_extra_losses(args, model, accelerator.device)
    discriminator, d_optimizer, d_scheduler = build_discriminator_training(args)
    model, optimizer, dataloader, lr_scheduler = accelerator.prepare(model, optimizer, dataloader, lr_scheduler)
    if discriminator is not None:  # saved as model_1 / optimizer_1 / scheduler_1 in the checkpoints
        discriminator, d_optimizer, d_scheduler = accelerator.prepare(discriminator, d_optimizer, d_scheduler)
    augmentation = AugmentationState(args.seed + 1 + accelerator.process_index)
    accelerator.register_for_checkpointing(augmentation)
    if ema is not None:
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    if accelerator.is_main_process:
        accelerator.init_trackers("train_bar_vq", config={k: v for k, v in vars(args).items() if v is not None})

    progress = resume_training_state(accelerator, output_dir, args.resume_from_checkpoint)
    gan = (discriminator, d_optimizer, d_scheduler)
    training_loop(args, accelerator, model, ema, dataloader, crop, optimizer, lr_scheduler, extra, gan, augmentation,
                  progress, output_dir, step_hook)  # fmt: skip

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_final_model(accelerator.unwrap_model(model), ema, output_dir, repo_id, args.hub_token)
    accelerator.end_training()


def training_loop(args, accelerator, model, ema, dataloader, crop, optimizer, lr_scheduler, extra, gan, augmentation,
                  progress, output_dir, step_hook=None) -> None:  # fmt: skip
    """Batches until `--max_train_steps`: generator steps, and from `--disc_start_step` on (with a discriminator)
    alternating D and G steps, each one global step; logging, checkpoints and `step_hook` (see `main`)."""
    discriminator, d_optimizer, d_scheduler = gan
    adversarial = (
        None if discriminator is None else adversarial_term(accelerator, discriminator, augmentation.generator)
    )
    bar = tqdm(
        range(args.max_train_steps), initial=progress.global_step, disable=not accelerator.is_local_main_process
    )
    model.train()
    if discriminator is not None:
        discriminator.train()
    batches = (
        training_batches(accelerator, dataloader, progress) if progress.global_step < args.max_train_steps else []
    )
    seconds = 0.0
    for batch in batches:
        started = time.perf_counter()
        images = random_crop_flip(batch["pixel_values"], crop, args.random_flip, augmentation.generator)
        step = progress.global_step  # 0-based index of this update
        if is_discriminator_step(args, step):
            loss, logs = discriminator_step(
                images, model, discriminator, args, accelerator, d_optimizer, augmentation.generator
            )
            lr_scheduler.step()  # the generator's schedule counts global steps (G and D)
        else:
            active = adversarial if discriminator is not None and step >= args.disc_start_step else None
            loss, logs = train_step(images, model, args, extra, accelerator, optimizer, lr_scheduler, active)
            if not accelerator.sync_gradients:
                seconds += time.perf_counter() - started
                continue
            if ema is not None:
                ema.step(model.parameters())
        if discriminator is not None and step >= args.disc_start_step:
            d_scheduler.step()
        progress.global_step += 1
        global_step = progress.global_step
        if step_hook is not None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            step_hook(global_step, seconds + time.perf_counter() - started)
            seconds = 0.0
        bar.update(1)
        if global_step % args.logging_steps == 0:
            log_step(accelerator, bar, global_step, loss, logs, lr_scheduler, d_scheduler)
        if global_step % args.checkpointing_steps == 0:
            save_training_checkpoint(accelerator, output_dir, progress, args.checkpoints_total_limit)
        if global_step >= args.max_train_steps:
            break


def log_step(accelerator, bar, global_step, loss, logs, lr_scheduler, d_scheduler) -> None:
    """One JSON-lines record: every loss term of this update (G terms, or `disc_*` for a D update) and the LRs."""
    values = {"lr": lr_scheduler.get_last_lr()[-1], **{k: v.item() for k, v in logs.items()}}
    if "disc_loss" not in logs:
        values["loss"] = loss.item()
    if d_scheduler is not None:
        values["disc_lr"] = d_scheduler.get_last_lr()[-1]
    accelerator.log(values, step=global_step)
    bar.set_postfix(loss=f"{loss.item():.4f}")


def save_final_model(model: BARVQModel, ema, output_dir, repo_id: str | None, token: str | None) -> None:
    """Save `<output_dir>/vqvae` (the EMA weights with `--use_ema`) and upload it with `--push_to_hub`."""
    if ema is not None:
        ema.copy_to(model.parameters())
    model.save_pretrained(output_dir / "vqvae")
    print(f"saved {output_dir / 'vqvae'}")
    upload_to_hub(repo_id, output_dir / "vqvae", token)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(parse_args())
