"""Convert the authors' released BAR checkpoints into `bar_hf` models and a `BARPipeline` folder.

The authors publish plain `torch.save(state_dict)` pickles (docs/method.md §8): five generators (loaded strictly, keys
exactly as in §8.2) and three BAR-FSQ tokenizers (loaded with `strict=False` after stripping a `_orig_mod.module.`
prefix, §8.3). This module

* loads a file with `torch.load(..., weights_only=True)` and strips the training-wrapper prefixes,
* infers every architecture size the tensors reveal (widths, depths, MLP sizes, head width/depth, attention heads of
  the generator from the QK-norm width, bits per token, grid, patch size, number of classes) and cross-checks them
  with the authors' YAML config, a preset and user overrides (any disagreement is an error naming the field and every
  value),
* maps every key to the `bar_hf` module names (the layouts are identical: fused qkv, SwiGLU `w12` = [gate; value],
  AdaLN chunk orders — no tensor is split or reordered), drops what inference does not need (frozen SigLIP2 copy,
  pooling head, distillation projector) and verifies the stored RoPE tables against the recomputed ones,
* refuses unknown, missing or mis-shaped keys with one error listing all of them (never a silent partial load).

The inverse maps ([`generator_to_authors_state_dict`], [`tokenizer_to_authors_state_dict`]) make the round trip
testable. [`convert_to_pipeline`] assembles a `BARPipeline` with the authors' evaluation sampling settings
(docs/method.md §4.5) and ImageNet-1k class names and saves (and optionally pushes) it.

The implementation is split along the data flow: [`bar_hf.conversion.keys`] (loading, key maps, report),
[`bar_hf.conversion.resolve`], [`bar_hf.conversion.infer`] (generator) and [`bar_hf.conversion.infer_tokenizer`] (size
inference and cross-checks), [`bar_hf.conversion.models`] (key/shape checks, RoPE verification, loading, inverse
maps); this module holds the pipeline assembly and the CLI and re-exports the public names.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..models.configuration_bar import BAR_PRESETS, BAR_SAMPLING_DEFAULTS, BARConfig
from .infer import infer_generator_config
from .infer_tokenizer import infer_tokenizer_config
from .keys import (
    AUTHORS_KEY_PREFIXES,
    TOKENIZER_DROPPED_PREFIXES,
    TOKENIZER_OPTIONAL_PREFIXES,
    UNSET,
    ConversionReport,
    generator_key_to_authors,
    imagenet_id2label,
    load_authors_checkpoint,
    load_authors_yaml,
    strip_key_prefixes,
    tokenizer_key_to_authors,
    yaml_get,
)
from .models import (
    check_generator_state_dict,
    check_tokenizer_state_dict,
    convert_generator,
    convert_tokenizer,
    generator_to_authors_state_dict,
    tokenizer_to_authors_state_dict,
)

__all__ = [
    "AUTHORS_KEY_PREFIXES",
    "TOKENIZER_DROPPED_PREFIXES",
    "TOKENIZER_OPTIONAL_PREFIXES",
    "ConversionReport",
    "load_authors_checkpoint",
    "strip_key_prefixes",
    "load_authors_yaml",
    "imagenet_id2label",
    "generator_key_to_authors",
    "tokenizer_key_to_authors",
    "infer_generator_config",
    "infer_tokenizer_config",
    "check_generator_state_dict",
    "check_tokenizer_state_dict",
    "convert_generator",
    "convert_tokenizer",
    "generator_to_authors_state_dict",
    "tokenizer_to_authors_state_dict",
    "detect_preset",
    "convert_to_pipeline",
    "add_convert_arguments",
    "add_convert_subparser",
    "run_convert",
]

logger = logging.getLogger(__name__)

#: Architecture fields that identify a preset (training-only fields such as dropout are ignored).
_PRESET_ARCH_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "latent_height",
    "latent_width",
    "num_bits",
    "patch_size",
)


# ---------------------------------------------------------------------------------------------------- pipeline
def detect_preset(config: BARConfig) -> str | None:
    """The preset whose architecture `config` matches (width, depth, heads, MLP, grid, bits, patch, 1000 classes,
    32 class tokens, the 2048-wide 3-block head), or `None`."""
    fields = _PRESET_ARCH_FIELDS + ("intermediate_size", "num_classes", "num_class_tokens", "head_hidden_size")
    fields += ("head_num_layers", "head_intermediate_size")
    for name in BAR_PRESETS:
        reference = BARConfig.from_preset(name)
        if all(getattr(config, f) == getattr(reference, f) for f in fields):
            return name
    return None


def _sampling_settings(
    preset: str | None, yaml_cfg: Mapping, sampling_overrides: Mapping[str, Any] | None
) -> tuple[dict[str, Any], str]:
    allowed = {"guidance_scale", "guidance_schedule", "temperature", "tokens_allocation", "num_inference_steps"}
    overrides = dict(sampling_overrides or {})
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(f"`sampling_overrides` has unknown fields {unknown}; valid fields are {sorted(allowed)}.")
    if preset is not None:
        settings, source = dict(BAR_SAMPLING_DEFAULTS[preset]), f"the authors' evaluation settings for {preset}"
    else:
        settings, source = {}, "defaults"
        for name, path in (
            ("guidance_scale", "model.generator.guidance_scale"),
            ("temperature", "model.generator.mbm_head.randomize_temperature"),
            ("tokens_allocation", "model.generator.mbm_head.tokens_allocation"),
        ):
            value = yaml_get(yaml_cfg, path)
            if value is not UNSET:
                settings[name] = value
                source = "the generator YAML (config-file defaults, not the README evaluation settings)"
    if overrides:
        source += " + sampling_overrides"
    settings.update(overrides)
    from ..pipelines.inputs import check_guidance_scale, check_guidance_schedule

    try:  # checked before converting: a stored bad value would make every call of the saved pipeline fail
        if "guidance_scale" in settings:
            settings["guidance_scale"] = check_guidance_scale(settings["guidance_scale"])
        if "guidance_schedule" in settings:
            check_guidance_schedule(settings["guidance_schedule"])
    except (ValueError, TypeError) as error:
        raise type(error)(f"{error} (sampling settings from {source})") from None
    return settings, source


def _model_card(info: dict) -> str:
    sampling = info["sampling"]
    lines = [
        "---",
        "library_name: diffusers",
        "license: apache-2.0",
        "tags:",
        "- bar_hf",
        "- class-conditional-image-generation",
        "- autoregressive",
        "---",
        "",
        f"# BAR pipeline converted from the authors' checkpoints{' (' + info['preset'] + ')' if info['preset'] else ''}",
        "",
        "Masked Bit AutoRegressive image generation (BAR), converted with `bar_hf` "
        "(`bar-hf convert` / `scripts/convert_bar_official.py`).",
        "",
        f"* generator: `{info['generator_checkpoint']}`",
        f"* tokenizer: `{info['tokenizer_checkpoint']}`",
        f"* default sampling ({info['sampling_source']}): guidance_scale {sampling.get('guidance_scale')}, "
        f"temperature {sampling.get('temperature')}, tokens_allocation {sampling.get('tokens_allocation')}",
        "",
        "```py",
        "import bar_hf  # registers the BAR classes",
        "from bar_hf import BARPipeline",
        "",
        "pipe = BARPipeline.from_pretrained(PATH_OR_REPO)",
        'image = pipe(class_labels=["golden retriever"]).images[0]',
        "```",
        "",
    ]
    if info["tokenizer"]["missing_allowed"]:
        lines += ["**Warning:** the tokenizer encoder was not in the source file; `vqvae.encode` is not usable.", ""]
    return "\n".join(lines)


def convert_to_pipeline(
    generator_checkpoint: str | Path | Mapping[str, torch.Tensor],
    tokenizer_checkpoint: str | Path | Mapping[str, torch.Tensor],
    output_dir: str | Path | None = None,
    *,
    generator_config: str | Path | Mapping | None = None,
    tokenizer_config: str | Path | Mapping | None = None,
    preset: str | None = None,
    generator_overrides: Mapping[str, Any] | None = None,
    tokenizer_overrides: Mapping[str, Any] | None = None,
    sampling_overrides: Mapping[str, Any] | None = None,
    allow_missing: bool = False,
    id2label: Mapping[int, str] | None = None,
    push_to_hub: str | None = None,
    private: bool | None = None,
):
    """Convert an authors' generator + tokenizer pair into a `BARPipeline` and save (and optionally push) it.

    The tokenizer is converted first; its `num_bits` and latent grid fix the generator's patch size. The pipeline
    gets the authors' evaluation sampling settings (docs/method.md §4.5) of `preset` (given, or detected from the
    converted architecture): `guidance_scale` on the pipeline, `temperature` and `tokens_allocation` on the scheduler.
    Without a preset, the generator YAML's config-file values are used when present. `sampling_overrides` (keys
    `guidance_scale`, `guidance_schedule`, `temperature`, `tokens_allocation`, `num_inference_steps`) win.
    ImageNet-1k class names are attached when the model has 1000 classes (or pass `id2label`).

    Args:
        generator_checkpoint, tokenizer_checkpoint: paths to the authors' `.bin` files, or loaded state dicts.
        output_dir (`str`, *optional*): folder for `save_pretrained` (plus a `README.md` model card and
            `conversion_info.json`).
        generator_config, tokenizer_config: the authors' YAML configs (optional; cross-checked).
        preset (`str`, *optional*): `bar-b-4`, `bar-b-2`, `bar-b`, `bar-l` or `bar-l-512`.
        generator_overrides, tokenizer_overrides (`dict`, *optional*): config fields to force.
        sampling_overrides (`dict`, *optional*): default sampling settings to store instead.
        allow_missing (`bool`, *optional*, defaults to `False`): see [`convert_tokenizer`].
        id2label (`dict`, *optional*): class names; defaults to ImageNet-1k for 1000-class models.
        push_to_hub (`str`, *optional*): Hub repo id to upload `output_dir` to.
        private (`bool`, *optional*): visibility of a repo created by `push_to_hub`.

    Returns:
        `BARPipeline`: the converted pipeline (float32, CPU).
    """
    from ..pipelines.pipeline_bar import BARPipeline

    paths = (generator_checkpoint, tokenizer_checkpoint, generator_config, tokenizer_config)
    _check_pipeline_inputs(preset, push_to_hub, output_dir, paths)
    generator_yaml = load_authors_yaml(generator_config)
    vqvae, tok_report = convert_tokenizer(
        tokenizer_checkpoint,
        yaml_config=tokenizer_config,
        overrides=tokenizer_overrides,
        allow_missing=allow_missing,
        return_report=True,
    )
    transformer, gen_report = convert_generator(
        generator_checkpoint,
        num_bits=vqvae.config.num_bits,
        latent_size=tuple(vqvae.grid_size),
        yaml_config=generator_yaml,
        preset=preset,
        overrides=generator_overrides,
        return_report=True,
    )
    _check_generator_yaml_against_tokenizer(generator_yaml, vqvae, tokenizer_checkpoint)
    sampling_preset = preset or detect_preset(transformer.config)
    if preset is None and sampling_preset is not None:
        logger.info("detected preset %s from the checkpoint's architecture", sampling_preset)
    settings, sampling_source = _sampling_settings(sampling_preset, generator_yaml, sampling_overrides)
    scheduler = _scheduler_from_settings(settings, transformer.config.bits_per_token)
    if id2label is None and transformer.config.num_classes == 1000:
        id2label = imagenet_id2label()
    pipeline_kwargs = {key: settings[key] for key in ("guidance_scale", "guidance_schedule") if key in settings}
    pipe = BARPipeline(vqvae=vqvae, transformer=transformer, scheduler=scheduler, id2label=id2label, **pipeline_kwargs)
    if output_dir is not None:
        checkpoints = {"generator_checkpoint": generator_checkpoint, "tokenizer_checkpoint": tokenizer_checkpoint}
        info = {name: str(v) if isinstance(v, (str, Path)) else "<state dict>" for name, v in checkpoints.items()}
        info.update(preset=sampling_preset, sampling=settings, sampling_source=sampling_source)
        info.update(generator=gen_report.to_dict(), tokenizer=tok_report.to_dict())
        _save_pipeline(pipe, Path(output_dir), info, push_to_hub, private)
    return pipe


def _check_pipeline_inputs(preset: str | None, push_to_hub: str | None, output_dir: Any, paths: tuple) -> None:
    if preset is not None and preset not in BAR_PRESETS:
        raise ValueError(f"`preset` must be one of {sorted(BAR_PRESETS)}, got {preset!r}.")
    if push_to_hub and output_dir is None:
        raise ValueError("`push_to_hub` needs an `output_dir` to save the pipeline into before uploading.")
    absent = [str(path) for path in paths if isinstance(path, (str, Path)) and not Path(path).is_file()]
    if absent:
        raise FileNotFoundError(f"input files not found: {', '.join(absent)}")


def _check_generator_yaml_against_tokenizer(generator_yaml: Mapping, vqvae, tokenizer_checkpoint: Any) -> None:
    """The generator YAML's crop size must be the tokenizer's image size; a different tokenizer file name warns."""
    crop = yaml_get(generator_yaml, "dataset.preprocessing.crop_size")
    sample_size = vqvae.config.sample_size
    image_size = list(sample_size) if isinstance(sample_size, (list, tuple)) else [sample_size] * 2
    if crop is not UNSET and [crop, crop] != image_size:
        raise ValueError(
            f"generator YAML dataset.preprocessing.crop_size={crop!r} disagrees with the tokenizer image size "
            f"{sample_size!r}: the generator was trained on another resolution's tokens."
        )
    yaml_tokenizer = yaml_get(generator_yaml, "experiment.tokenizer_checkpoint")
    if yaml_tokenizer is not UNSET and isinstance(tokenizer_checkpoint, (str, Path)):
        if Path(str(yaml_tokenizer)).name != Path(tokenizer_checkpoint).name:
            logger.warning(
                "the generator YAML names tokenizer %s but %s was given (the authors evaluate BAR-B/BAR-L with "
                "bar_fsq_16bits_ft.bin and BAR-B/2, BAR-B/4 with bar_fsq_16bits.bin).",
                Path(str(yaml_tokenizer)).name,
                Path(tokenizer_checkpoint).name,
            )


def _scheduler_from_settings(settings: Mapping[str, Any], bits_per_token: int):
    from ..schedulers.scheduling_bar import BARBitScheduler

    scheduler_kwargs = {
        key: settings[key] for key in ("temperature", "tokens_allocation", "num_inference_steps") if key in settings
    }
    if "tokens_allocation" in scheduler_kwargs:
        scheduler_kwargs["tokens_allocation"] = [int(v) for v in scheduler_kwargs["tokens_allocation"]]
        scheduler_kwargs.setdefault("num_inference_steps", len(scheduler_kwargs["tokens_allocation"]))
    return BARBitScheduler(bits_per_token=bits_per_token, **scheduler_kwargs)


def _save_pipeline(pipe, output_dir: Path, info: dict, push_to_hub: str | None, private: bool | None) -> None:
    """`save_pretrained` plus `conversion_info.json` and a `README.md` model card; optionally upload the folder."""
    pipe.save_pretrained(output_dir)
    with open(output_dir / "conversion_info.json", "w", encoding="utf-8") as handle:
        json.dump(info, handle, indent=2)
        handle.write("\n")
    with open(output_dir / "README.md", "w", encoding="utf-8") as handle:
        handle.write(_model_card(info))
    if push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(push_to_hub, exist_ok=True, private=private, repo_type="model")
        api.upload_folder(repo_id=push_to_hub, folder_path=str(output_dir), commit_message="Convert BAR checkpoints")


# ---------------------------------------------------------------------------------------------------- CLI
def _json_dict(text: str | None, flag: str) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"`{flag}` must be a JSON object, got {text!r} ({error}).") from error
    if not isinstance(value, dict):
        raise ValueError(f"`{flag}` must be a JSON object, got {text!r}.")
    return value


def add_convert_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the conversion flags (each also accepted with dashes: `--output-dir`) to `parser`."""

    def flag(name: str, **kwargs):
        names = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        parser.add_argument(*names, dest=name, **kwargs)

    flag("generator_checkpoint", required=True, help="authors' generator .bin (e.g. assets/generator/bar_b.bin)")
    flag(
        "tokenizer_checkpoint",
        required=True,
        help="authors' tokenizer .bin (e.g. assets/tokenizer/bar_fsq_16bits_ft.bin)",
    )
    flag("generator_config", default=None, help="authors' generator YAML (optional; cross-checked)")
    flag("tokenizer_config", default=None, help="authors' tokenizer YAML (optional; cross-checked)")
    flag("output_dir", required=True, help="folder for the converted BARPipeline")
    flag("preset", default=None, choices=sorted(BAR_PRESETS), help="model name (checked; fixes the sampling defaults)")
    flag("push_to_hub", default=None, metavar="REPO_ID", help="also upload the folder to this Hub repo")
    flag("private", action="store_true", help="create the Hub repo as private")
    flag("allow_missing", action="store_true", help="accept a tokenizer file without its encoder (decode-only)")
    flag("generator_overrides", default=None, metavar="JSON", help="BARConfig fields, e.g. '{\"rope_theta\": 10000}'")
    flag(
        "tokenizer_overrides",
        default=None,
        metavar="JSON",
        help="BARVQModel fields, e.g. '{\"encoder_num_heads\": 4}'",
    )
    flag("sampling_overrides", default=None, metavar="JSON", help="e.g. '{\"guidance_scale\": 4.0}'")
    flag("verbose", action="store_true", help="log progress")
    return parser


def add_convert_subparser(subparsers) -> argparse.ArgumentParser:
    """Register `convert` on an `argparse` subparsers object (used by `bar-hf convert`)."""
    parser = subparsers.add_parser(
        "convert",
        help="convert the authors' BAR checkpoints into a BARPipeline folder",
        description="Convert an authors' BAR generator + BAR-FSQ tokenizer (.bin) into a BARPipeline folder.",
    )
    add_convert_arguments(parser)
    parser.set_defaults(func=run_convert)
    return parser


def run_convert(args: argparse.Namespace) -> int:
    """Run a conversion from parsed [`add_convert_arguments`] flags; returns 0."""
    if getattr(args, "verbose", False):
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    pipe = convert_to_pipeline(
        args.generator_checkpoint,
        args.tokenizer_checkpoint,
        args.output_dir,
        generator_config=args.generator_config,
        tokenizer_config=args.tokenizer_config,
        preset=args.preset,
        generator_overrides=_json_dict(args.generator_overrides, "--generator_overrides"),
        tokenizer_overrides=_json_dict(args.tokenizer_overrides, "--tokenizer_overrides"),
        sampling_overrides=_json_dict(args.sampling_overrides, "--sampling_overrides"),
        allow_missing=args.allow_missing,
        push_to_hub=args.push_to_hub,
        private=args.private or None,
    )
    config = pipe.transformer.config
    print(
        f"wrote a BARPipeline to {args.output_dir} (D={config.hidden_size}, depth {config.num_hidden_layers}, "
        f"N={config.num_ar_steps} steps of k={config.bits_per_token} bits, {config.num_classes} classes)"
        + (f"; pushed to {args.push_to_hub}" if args.push_to_hub else "")
    )
    return 0
