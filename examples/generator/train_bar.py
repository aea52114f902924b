#!/usr/bin/env python
"""Train the BAR generator (`BARForCausalImageModeling`) with accelerate and save a complete `BARPipeline`.

    accelerate launch examples/generator/train_bar.py --pretokenized_dataset runs/tokens \
        --vqvae_model_name_or_path runs/vq/vqvae --model_config examples/generator/configs/bar_fashion_mnist.json \
        --output_dir runs/bar --max_train_steps 5000

Data: a folder written by `pretokenize.py` (each sample picks its stored tokens or their flip with probability 0.5)
or images tokenized on the fly (`--dataset_name`/`--train_data_dir` + the tokenizer). Recipe of docs/method.md §7:
AdamW with the authors' weight-decay exclusion rule, linear warmup + cosine to `--min_learning_rate`, label dropout
(`class_dropout_prob` in the model config), optional random-order training annealed to raster (§3.7), no EMA.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm

from bar_hf import BARBitScheduler, BARConfig, BARForCausalImageModeling, BARPipeline, BARVQModel
from bar_hf.masks import kept_first_orders, random_token_masks
from bar_hf.models.modeling_bar import order_annealing_ratio, weight_decay_parameter_groups
from bar_hf.training.checkpoints import resume_training_state, save_training_checkpoint, training_batches
from bar_hf.training.data import (
    DEBIAN_FASHION_MNIST_DIR,
    AugmentationState,
    dummy_image_dataset,
    image_to_tensor,
    load_image_dataset,
)
from bar_hf.training.lora import add_lora_args, save_lora_output, setup_lora_training
from bar_hf.training.utils import (
    AT_LEAST_0,
    AT_LEAST_1,
    TRAINING_FLAG_RULES,
    UNIT_INTERVAL,
    check_columns,
    check_flags,
    cosine_with_warmup,
    create_accelerator,
    parse_and_validate,
    read_json_flag,
    tokenizer_fingerprint,
    upload_to_hub,
)

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    data = parser.add_argument_group("data")
    data.add_argument("--pretokenized_dataset", default=None, help="output folder of pretokenize.py")
    data.add_argument("--dataset_name", default=None, help="images tokenized on the fly (Hub / disk / local name)")
    data.add_argument("--dataset_config_name", default=None)
    data.add_argument("--train_data_dir", default=None, help="an imagefolder directory (tokenized on the fly)")
    data.add_argument(
        "--fashion_mnist_dir", default=DEBIAN_FASHION_MNIST_DIR, help="IDX files read by --dataset_name fashion_mnist_local"
    )
    data.add_argument("--use_dummy_data", action="store_true", help="random images tokenized on the fly")
    data.add_argument("--image_column", default="image")
    data.add_argument("--label_column", default="label")
    data.add_argument("--random_flip", action="store_true", help="on-the-fly data: random horizontal flips")
    model = parser.add_argument_group("model")
    model.add_argument("--vqvae_model_name_or_path", required=True, help="the tokenizer (saved into the pipeline)")
    model.add_argument("--model_config", default=None, help="JSON file of BARConfig arguments")
    model.add_argument("--preset", default=None, help="one of the authors' models, e.g. bar-b")
    model.add_argument("--pretrained_model_name_or_path", default=None, help="continue from a saved transformer")
    train = parser.add_argument_group("training")
    train.add_argument("--output_dir", required=True)
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--train_batch_size", type=int, default=64)
    train.add_argument("--max_train_steps", type=int, default=1000)
    train.add_argument("--gradient_accumulation_steps", type=int, default=1)
    train.add_argument("--learning_rate", type=float, default=4e-4)
    train.add_argument("--min_learning_rate", type=float, default=1e-5)
    train.add_argument("--lr_warmup_steps", type=int, default=100)
    train.add_argument("--adam_beta1", type=float, default=0.9)
    train.add_argument("--adam_beta2", type=float, default=0.96)
    train.add_argument("--adam_weight_decay", type=float, default=0.03)
    train.add_argument("--max_grad_norm", type=float, default=1.0)
    train.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default="no")
    train.add_argument("--random_order_anneal_start", type=int, default=None, help="step; random orders before it")
    train.add_argument("--random_order_anneal_end", type=int, default=None, help="step; raster after it")
    train.add_argument(
        "--edit_order_ratio",
        type=float,
        default=0.0,
        help="probability that a raster-order sample uses a 'kept first' editing order of a random mask instead",
    )
    train.add_argument("--gradient_checkpointing", action="store_true")
    sample = parser.add_argument_group("sampling defaults stored in the pipeline, validation")
    sample.add_argument("--guidance_scale", type=float, default=2.0)
    sample.add_argument("--temperature", type=float, default=1.0)
    sample.add_argument("--num_inference_steps", type=int, default=4)
    sample.add_argument("--tokens_allocation", default=None, help="JSON list, e.g. [2,2,3,3]")
    sample.add_argument("--validation_steps", type=int, default=None)
    sample.add_argument("--num_validation_images", type=int, default=4, help="per class (first 10 classes)")
    run = parser.add_argument_group("checkpoints and logging")
    run.add_argument("--checkpointing_steps", type=int, default=500)
    run.add_argument("--checkpoints_total_limit", type=int, default=None)
    run.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint folder")
    run.add_argument("--logging_steps", type=int, default=10)
    run.add_argument("--report_to", default=None, help="extra tracker: tensorboard or wandb (optional)")
    run.add_argument("--push_to_hub", action="store_true")
    run.add_argument("--hub_model_id", default=None)
    run.add_argument("--hub_token", default=None)
    add_lora_args(parser)
    return parse_and_validate(parser, argv, validate_args)


#: Numeric flags and their rules (checked before anything is loaded).
FLAG_RULES = {
    **TRAINING_FLAG_RULES,
    "random_order_anneal_start": AT_LEAST_0,
    "random_order_anneal_end": AT_LEAST_0,
    "edit_order_ratio": UNIT_INTERVAL,
    "guidance_scale": AT_LEAST_0,
    "temperature": AT_LEAST_0,
    "num_inference_steps": AT_LEAST_1,
    "validation_steps": AT_LEAST_1,
    "num_validation_images": AT_LEAST_1,
}


def validate_args(args: argparse.Namespace) -> None:
    """Every flag that can be checked without loading anything; `ValueError` naming the flag otherwise."""
    sources = [args.pretokenized_dataset, args.dataset_name, args.train_data_dir, args.use_dummy_data]
    if sum(bool(s) for s in sources) != 1:
        raise ValueError(
            "give exactly one of --pretokenized_dataset, --dataset_name, --train_data_dir, --use_dummy_data"
        )
    if sum(bool(s) for s in (args.model_config, args.preset, args.pretrained_model_name_or_path)) != 1:
        raise ValueError("give exactly one of --model_config, --preset, --pretrained_model_name_or_path")
    if (args.random_order_anneal_start is None) != (args.random_order_anneal_end is None):
        raise ValueError("--random_order_anneal_start and --random_order_anneal_end go together")
    check_flags(args, FLAG_RULES)
    if args.random_order_anneal_start is not None and args.random_order_anneal_end < args.random_order_anneal_start:
        raise ValueError(
            f"`--random_order_anneal_end` ({args.random_order_anneal_end}) must be >= `--random_order_anneal_start` "
            f"({args.random_order_anneal_start})."
        )
    parse_tokens_allocation(args.tokens_allocation)


def parse_tokens_allocation(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        allocation = json.loads(text)
    except ValueError:
        allocation = None
    if not isinstance(allocation, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in allocation):
        raise ValueError(f"`--tokens_allocation` must be a JSON list of ints such as [2,2,3,3], got {text!r}.")
    return allocation


def build_model(args: argparse.Namespace) -> BARForCausalImageModeling:
    if args.pretrained_model_name_or_path:
        return BARForCausalImageModeling.from_pretrained(args.pretrained_model_name_or_path)
    if args.preset:
        return BARForCausalImageModeling(BARConfig.from_preset(args.preset))
    return BARForCausalImageModeling(BARConfig(**read_json_flag(args.model_config, "--model_config")))


def load_pretokenized(args: argparse.Namespace, vq: BARVQModel, num_classes: int):
    """The dataset written by `pretokenize.py`, checked against the tokenizer (fingerprint, grid, bits) and the
    model's class count. Returns `(dataset, transform, collate, label names)`."""
    num_tokens, num_bits = vq.num_tokens, vq.config.num_bits
    root = Path(args.pretokenized_dataset)
    if not (root / "metadata.json").is_file() or not (root / "dataset").is_dir():
        raise ValueError(
            f"`--pretokenized_dataset` {str(root)!r} has no metadata.json and dataset/ (not written by pretokenize.py, "
            "or pretokenize.py did not finish: run it again, it resumes)."
        )
    metadata = json.loads((root / "metadata.json").read_text())
    if (metadata["num_bits"], metadata["latent_height"] * metadata["latent_width"]) != (num_bits, num_tokens):
        raise ValueError(
            f"the pretokenized data ({metadata['num_bits']} bits, {metadata['latent_height']}x"
            f"{metadata['latent_width']} grid) does not match the tokenizer ({num_bits} bits, {vq.grid_size})."
        )
    stored = metadata.get("vqvae_fingerprint")
    if stored is None:
        logger.warning(
            "%s has no tokenizer fingerprint (older pretokenize.py): cannot check that it was made "
            "with --vqvae_model_name_or_path",
            root,
        )
    elif stored != tokenizer_fingerprint(vq):
        raise ValueError(
            f"`--pretokenized_dataset` {str(root)!r} was encoded by another tokenizer ({metadata.get('vqvae')!r}) "
            f"than `--vqvae_model_name_or_path` {args.vqvae_model_name_or_path!r} (their weights differ); "
            "pretokenize the data with this tokenizer or pass the one that made it."
        )
    if metadata.get("unconditional") and num_classes > 1:
        logger.warning("%s was pretokenized with --unconditional: every label is 0", root)
    dataset = datasets.load_from_disk(str(root / "dataset"))
    labels = np.asarray(dataset.data.column("label"))
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
        raise ValueError(
            f"`--pretokenized_dataset` holds labels {int(labels.min())}..{int(labels.max())} but the model has "
            f"num_classes={num_classes} (labels must be in 0..{num_classes - 1})."
        )

    def unpack(packed):
        flat = np.unpackbits(np.asarray(packed, np.uint8))[: num_tokens * num_bits]
        return torch.from_numpy(flat.reshape(num_tokens, num_bits))

    def transform(rows):
        return {
            "tokens": [unpack(p) for p in rows["tokens"]],
            "tokens_flip": [unpack(p) for p in rows["tokens_flip"]],
            "label": rows["label"],
        }

    def collate(rows):
        return {
            "tokens": torch.stack([r["tokens"] for r in rows]).long(),
            "tokens_flip": torch.stack([r["tokens_flip"] for r in rows]).long(),
            "label": torch.tensor([r["label"] for r in rows]),
        }

    return dataset, transform, collate, metadata.get("label_names")


def load_images(args: argparse.Namespace, vq: BARVQModel, num_classes: int):
    """Images tokenized on the fly, with their columns checked. Returns `(dataset, transform, collate, names)`."""
    size = vq.config.sample_size if isinstance(vq.config.sample_size, int) else vq.config.sample_size[0]
    if args.use_dummy_data:
        dataset = dummy_image_dataset(32, size, vq.config.in_channels, num_classes=min(3, num_classes))
    else:
        dataset = load_image_dataset(
            args.dataset_name, args.dataset_config_name, args.train_data_dir, fashion_mnist_dir=args.fashion_mnist_dir
        )
    check_columns(dataset, {"--image_column": args.image_column, "--label_column": args.label_column})
    feature = dataset.features.get(args.label_column)
    names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    if names is not None and len(names) > num_classes:
        raise ValueError(
            f"`--label_column` {args.label_column!r} has {len(names)} classes but the model has "
            f"num_classes={num_classes}; use a model config with num_classes >= {len(names)}."
        )

    def transform(rows):
        return {
            "pixel_values": [image_to_tensor(img, size, vq.config.in_channels) for img in rows[args.image_column]],
            "label": rows[args.label_column],
        }

    def collate(rows):
        return {
            "pixel_values": torch.stack([r["pixel_values"] for r in rows]),
            "label": torch.tensor([r["label"] for r in rows]),
        }

    return dataset, transform, collate, names


def build_data(args: argparse.Namespace, vq: BARVQModel, num_classes: int):
    """Returns (dataloader, label names). Batches hold `bits` `(B, L, num_bits)` or `pixel_values`, and `label`."""
    load = load_pretokenized if args.pretokenized_dataset else load_images
    dataset, transform, collate, names = load(args, vq, num_classes)
    if len(dataset) < args.train_batch_size:
        raise ValueError(
            f"`--train_batch_size` ({args.train_batch_size}) is larger than the dataset ({len(dataset)} examples): "
            "incomplete batches are dropped, so an epoch would have no batch."
        )
    dataset.set_transform(transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.train_batch_size, shuffle=True, drop_last=True, collate_fn=collate
    )
    return loader, names


@torch.no_grad()
def batch_bits(batch: dict, vq: BARVQModel, args, generator: torch.Generator, device) -> torch.Tensor:
    """Tokenizer bits `(B, L, num_bits)` for a batch: pick each stored sample or its flip with p = 0.5, or encode
    (randomly flipped) images with the frozen tokenizer."""
    if "tokens" in batch:
        use_flip = torch.rand(batch["tokens"].shape[0], generator=generator) < 0.5
        bits = torch.where(use_flip[:, None, None], batch["tokens_flip"].cpu(), batch["tokens"].cpu())
        return bits.to(device)
    images = batch["pixel_values"]
    if args.random_flip:
        flip = torch.rand(images.shape[0], generator=generator) < 0.5
        images = torch.where(flip[:, None, None, None], images.cpu().flip(-1), images.cpu())
    return vq.encode_to_bits(images.to(device))


def make_pipeline(vq, model, names, args) -> BARPipeline:
    """The pipeline saved at the end; built once before training too, so that bad sampling flags fail up front."""
    allocation = parse_tokens_allocation(args.tokens_allocation)
    try:
        scheduler = BARBitScheduler(
            bits_per_token=model.config.bits_per_token,
            num_inference_steps=len(allocation) if allocation else args.num_inference_steps,
            tokens_allocation=allocation,
            temperature=args.temperature,
        )
    except ValueError as error:
        raise ValueError(
            f"invalid sampling flags --tokens_allocation {args.tokens_allocation!r} / --num_inference_steps "
            f"{args.num_inference_steps} / --temperature {args.temperature} for a model with "
            f"{model.config.bits_per_token} bits per token: {error}"
        ) from error
    id2label = {i: name for i, name in enumerate(names)} if names else None
    return BARPipeline(vq, model, scheduler, id2label=id2label, guidance_scale=args.guidance_scale)


def validate(vq, model, names, args, step: int, output_dir: Path, accelerator) -> None:
    from bar_hf.cli import make_grid

    pipe = make_pipeline(vq, model, names, args)
    pipe.set_progress_bar_config(disable=True)
    labels = list(range(min(10, model.config.num_classes)))
    count = len(labels) * args.num_validation_images
    was_training = model.training
    model.eval()
    images = pipe(
        labels,
        num_images_per_label=args.num_validation_images,
        generator=[torch.Generator().manual_seed(i) for i in range(count)],
    ).images
    model.train(was_training)
    titles = [names[i] if names else str(i) for i in labels]
    path = output_dir / "validation" / f"step-{step:07d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    make_grid(images, titles, args.num_validation_images, scale=2).save(path)
    accelerator.log({"validation_grid": str(path)}, step=step)


def load_models(args: argparse.Namespace, device) -> tuple[BARVQModel, BARForCausalImageModeling]:
    vq = BARVQModel.from_pretrained(args.vqvae_model_name_or_path).eval().requires_grad_(False).to(device)
    model = build_model(args)
    if (vq.config.num_bits, tuple(vq.grid_size)) != (
        model.config.num_bits,
        (model.config.latent_height, model.config.latent_width),
    ):
        raise ValueError(
            f"tokenizer ({vq.config.num_bits} bits, grid {vq.grid_size}) and generator config ({model.config.num_bits} "
            f"bits, grid {(model.config.latent_height, model.config.latent_width)}) disagree."
        )
    # recorded in config.json: BARInpaintPipeline picks its default order from it
    model.config.training_orders = {
        "random_order_anneal_start": args.random_order_anneal_start,
        "random_order_anneal_end": args.random_order_anneal_end,
        "edit_order_ratio": args.edit_order_ratio,
    }
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable()
    return vq, model


def training_orders(model, batch: int, random_ratio: float, edit_ratio: float, generator) -> torch.Tensor:
    """Per sample: a random permutation with probability `random_ratio` (the authors' annealing, §3.7); otherwise,
    with probability `edit_ratio`, the "kept first" order of a random editing mask (`bar_hf.masks`: kept tokens in
    raster order, then the regenerated ones, as `BARInpaintPipeline(order="kept_first")` samples); else raster."""
    orders = model.random_orders(batch, random_ratio, "cpu", generator=generator)
    if edit_ratio > 0:
        config = model.config
        raster = (orders == torch.arange(config.num_ar_steps)).all(-1)
        regenerate = random_token_masks(batch, (config.grid_height, config.grid_width), generator=generator)
        use_edit = (torch.rand(batch, generator=generator) < edit_ratio) & raster
        orders = torch.where(use_edit[:, None], kept_first_orders(regenerate), orders)
    return orders


def train_step(batch, model, unwrapped, vq, args, augmentation, accelerator, optimizer, lr_scheduler, step: int):
    """One (micro-)batch: bits, random orders, forward, backward, optimizer step. Returns `(loss, order ratio)`."""
    with accelerator.accumulate(model):
        bits = batch_bits(batch, vq, args, augmentation.generator, accelerator.device)
        ratio = 0.0
        if args.random_order_anneal_start is not None:
            ratio = order_annealing_ratio(step, args.random_order_anneal_start, args.random_order_anneal_end)
        orders = training_orders(unwrapped, bits.shape[0], ratio, args.edit_order_ratio, augmentation.generator)
        loss = model(bits, batch["label"].to(accelerator.device), orders=orders.to(accelerator.device)).loss
        accelerator.backward(loss)
        if accelerator.sync_gradients and args.max_grad_norm:
            accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
    return loss, ratio


def save_and_push(vq, unwrapped, names, args, output_dir: Path, repo_id: str | None, accelerator) -> None:
    """Save the final `BARPipeline`; with `--push_to_hub`, add the BAR model card (README.md) and upload."""
    pipe = make_pipeline(vq, unwrapped.eval(), names, args)
    pipe.save_pretrained(output_dir / "pipeline")
    accelerator.print(f"saved the pipeline to {output_dir / 'pipeline'}")
    if repo_id is not None:
        from bar_hf.pipelines.hub import bar_model_card

        bar_model_card(pipe, repo_id).save(str(output_dir / "pipeline" / "README.md"))
        upload_to_hub(repo_id, output_dir / "pipeline", args.hub_token)


def main(args: argparse.Namespace, step_hook=None) -> None:
    """Train and save `<output_dir>/pipeline` (or the LoRA adapter). `step_hook(global_step, seconds)`, when given, is
    called after each optimizer step with the wall time of its (micro-)batches' forward, backward and update (not
    logging, checkpointing or validation); the head study in `research/` times steps with it."""
    validate_args(args)
    accelerator, output_dir, repo_id = create_accelerator(args, "train_bar")
    vq, model = load_models(args, accelerator.device)
    setup_lora_training(model, args)  # --lora_rank: frozen model + trainable adapter
    dataloader, names = build_data(args, vq, model.config.num_classes)
    make_pipeline(vq, model, names, args)  # sampling flags fail now, not after training
    optimizer = torch.optim.AdamW(
        weight_decay_parameter_groups(model, args.adam_weight_decay),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
    )
    lr_scheduler = cosine_with_warmup(optimizer, args.lr_warmup_steps, args.max_train_steps, args.min_learning_rate)
    model, optimizer, dataloader, lr_scheduler = accelerator.prepare(model, optimizer, dataloader, lr_scheduler)
    augmentation = AugmentationState(args.seed + 1 + accelerator.process_index)
    accelerator.register_for_checkpointing(augmentation)
    if accelerator.is_main_process:
        accelerator.init_trackers("train_bar", config={k: v for k, v in vars(args).items() if v is not None})
    progress = resume_training_state(accelerator, output_dir, args.resume_from_checkpoint)

    unwrapped = accelerator.unwrap_model(model)
    bar = tqdm(
        range(args.max_train_steps), initial=progress.global_step, disable=not accelerator.is_local_main_process
    )
    model.train()
    batches = (
        training_batches(accelerator, dataloader, progress) if progress.global_step < args.max_train_steps else []
    )
    seconds = 0.0
    for batch in batches:
        started = time.perf_counter()
        step_args = (vq, args, augmentation, accelerator, optimizer, lr_scheduler, progress.global_step)
        loss, ratio = train_step(batch, model, unwrapped, *step_args)
        if torch.cuda.is_available() and step_hook is not None:
            torch.cuda.synchronize()
        seconds += time.perf_counter() - started
        if not accelerator.sync_gradients:
            continue
        progress.global_step += 1
        global_step = progress.global_step
        if step_hook is not None:
            step_hook(global_step, seconds)
        seconds = 0.0
        bar.update(1)
        if global_step % args.logging_steps == 0:
            values = {"loss": loss.item(), "lr": lr_scheduler.get_last_lr()[0], "random_order_ratio": ratio}
            accelerator.log(values, step=global_step)
            bar.set_postfix(loss=f"{values['loss']:.4f}")
        if global_step % args.checkpointing_steps == 0:
            save_training_checkpoint(accelerator, output_dir, progress, args.checkpoints_total_limit)
        if args.validation_steps and global_step % args.validation_steps == 0 and accelerator.is_main_process:
            validate(vq, unwrapped, names, args, global_step, output_dir, accelerator)
        if global_step >= args.max_train_steps:
            break

    accelerator.wait_for_everyone()
    if accelerator.is_main_process and args.lora_rank:  # only the adapter: `pipe.load_lora_weights(folder)`
        upload_to_hub(repo_id, save_lora_output(unwrapped, output_dir), args.hub_token)
    elif accelerator.is_main_process:
        save_and_push(vq, unwrapped, names, args, output_dir, repo_id, accelerator)
    accelerator.end_training()


if __name__ == "__main__":
    main(parse_args())
