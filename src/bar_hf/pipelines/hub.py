"""Hub helpers for `BARPipeline`: the remote-code export, a BAR model card and `push_pipeline_to_hub`.

Canonical format (docs/method.md §12): what `BARPipeline.save_pretrained` writes ("layout P", component libraries
recorded as `bar_hf.<module>`), loaded with `import bar_hf; BARPipeline.from_pretrained(repo_id)`.

Optional export ("layout R", `write_remote_code_shims`): one-line re-export files that let users of plain diffusers
load the repo with `DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)`, provided `bar_hf` is
installed. The shims only re-export the installed `bar_hf` classes, so the loaded objects are the real `bar_hf`
classes (no source is copied into the repo).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import HfApi, ModelCard, ModelCardData
from huggingface_hub.utils import validate_repo_id

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

    from .pipeline_bar import BARPipeline

__all__ = [
    "BAR_CARD_TAGS",
    "PIPELINE_SHIM_MODULE",
    "bar_model_card",
    "push_pipeline_to_hub",
    "write_remote_code_shims",
]

#: Module file (without `.py`) written at the repo root by `write_remote_code_shims`.
PIPELINE_SHIM_MODULE = "pipeline_bar_hf"

#: Tags every BAR model card carries (extra tags are appended).
BAR_CARD_TAGS = ("bar_hf", "autoregressive", "class-conditional", "image-generation", "masked-bit-modeling")

# Libraries diffusers 0.42 imports itself; their components need no shim.
_NATIVE_LIBRARIES = ("diffusers", "transformers", "onnxruntime.training")

_SHIM_HEADER = (
    "# Re-export written by bar_hf.pipelines.hub.write_remote_code_shims: lets\n"
    "# `DiffusionPipeline.from_pretrained(repo, trust_remote_code=True)` load the installed bar_hf class.\n"
    "# Requires `pip install bar_hf`; contains no model code.\n"
)


def _shim_source(module: str, class_name: str) -> str:
    return f"{_SHIM_HEADER}from {module} import {class_name}  # noqa: F401\n"


def _check_identifier(what: str, value: Any) -> str:
    if not isinstance(value, str) or not all(part.isidentifier() for part in value.split(".")):
        raise ValueError(f"{what} must be a dotted Python identifier, got {value!r}.")
    return value


def _check_importable_module(what: str, module: Any) -> str:
    module = _check_identifier(what, module)
    if module.split(".")[0] in ("__main__", "diffusers_modules", "transformers_modules"):
        raise ValueError(
            f"{what} must be a module of an installed package that the shim can import, got {module!r} (define the "
            "class in a package, not in a script or in remote code)."
        )
    return module


def write_remote_code_shims(save_directory: str | os.PathLike, pipeline_class: type | None = None) -> dict[str, str]:
    """Turn a folder written by `BARPipeline.save_pretrained` into the remote-code layout (docs/method.md §12).

    Writes, next to the saved weights:

    - `pipeline_bar_hf.py` at the root: `from bar_hf.pipelines.pipeline_bar import BARPipeline`, and sets
      `model_index.json["_class_name"]` to `["pipeline_bar_hf", "BARPipeline"]`;
    - for every component recorded with a third-party library (e.g. `["bar_hf.models.modeling_bar",
      "BARForCausalImageModeling"]`): `<component>/<module>.py` re-exporting the class (`module` = last part of the
      library path, here `modeling_bar`) and the entry rewritten to `["modeling_bar", "BARForCausalImageModeling"]`.

    Components from diffusers/transformers and empty (`[null, null]`) entries are left as they are. Calling it again
    on an exported folder changes nothing (entries already in layout R are skipped).

    After this, `DiffusionPipeline.from_pretrained(folder_or_repo, trust_remote_code=True)` returns the real bar_hf
    classes for anyone with `bar_hf` installed, and `BARPipeline.from_pretrained` needs `trust_remote_code=True` too.
    A plain `save_pretrained` of the loaded pipeline writes the canonical layout again.

    Args:
        save_directory (`str` or `os.PathLike`): folder containing `model_index.json`.
        pipeline_class (`type`, *optional*): the pipeline class to re-export; defaults to the class of `bar_hf`
            named by `model_index.json["_class_name"]`.

    Returns:
        `dict[str, str]`: shim path (relative to `save_directory`, POSIX separators) → file content.
    """
    folder = Path(save_directory)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ValueError(
            f"`save_directory` must contain a `model_index.json` written by `save_pretrained`, got {str(folder)!r}."
        )
    index = json.loads(index_path.read_text(encoding="utf-8"))
    written: dict[str, str] = {}

    class_name = index.get("_class_name")
    if isinstance(class_name, (list, tuple)):
        if pipeline_class is not None and class_name[1] != pipeline_class.__name__:
            raise ValueError(
                f"`model_index.json` already re-exports pipeline class {class_name[1]!r} but `pipeline_class` is "
                f"{pipeline_class.__name__!r}."
            )
    else:
        if pipeline_class is None:
            import bar_hf

            pipeline_class = getattr(bar_hf, str(class_name), None)
            if pipeline_class is None:
                raise ValueError(
                    f"`model_index.json['_class_name']` is {class_name!r}, which is not a `bar_hf` class; pass "
                    "`pipeline_class` explicitly."
                )
        module = _check_importable_module("`pipeline_class.__module__`", pipeline_class.__module__)
        rel = f"{PIPELINE_SHIM_MODULE}.py"
        written[rel] = _shim_source(module, pipeline_class.__name__)
        index["_class_name"] = [PIPELINE_SHIM_MODULE, pipeline_class.__name__]

    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, (list, tuple)) or len(entry) != 2:
            continue
        library, component_class = entry
        if not (isinstance(library, str) and isinstance(component_class, str) and (folder / name).is_dir()):
            continue  # `[null, null]` (no component) or a plain config value, not a saved component
        if library in _NATIVE_LIBRARIES or library.split(".")[0] in ("diffusers", "transformers"):
            continue
        library = _check_importable_module(f"library of component `{name}`", library)
        if "." not in library:
            continue  # already a shim entry (layout R)
        module_file = library.rsplit(".", 1)[1]
        written[f"{name}/{module_file}.py"] = _shim_source(library, _check_identifier("class name", component_class))
        index[name] = [module_file, component_class]

    for rel, source in written.items():
        (folder / rel).write_text(source, encoding="utf-8")
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return written


def _format_value(value: Any) -> str:
    return "`None`" if value is None else f"`{value}`"


def bar_model_card(
    pipeline: BARPipeline,
    repo_id: str,
    license: str = "apache-2.0",
    base_model: str | list[str] | None = None,
    extra_tags: Iterable[str] = (),
    remote_code: bool = False,
) -> ModelCard:
    """Model card (README.md) for a BAR pipeline repo.

    The card shows `import bar_hf` + `BARPipeline.from_pretrained(repo_id)` usage (a plain
    `DiffusionPipeline.from_pretrained(repo_id)` cannot load third-party components from the Hub, diffusers#5728), the
    sampling defaults stored with the pipeline (guidance scale/schedule, scheduler class, temperature, tokens
    allocation, head steps), the number of classes and the latent layout. Metadata: `library_name: diffusers`,
    `pipeline_tag: unconditional-image-generation`, tags `BAR_CARD_TAGS` + `extra_tags`, `license`, `base_model`.

    Args:
        pipeline ([`BARPipeline`]): the pipeline being published.
        repo_id (`str`): the repo id used in the usage snippet (`"org/name"`).
        license (`str`, *optional*, defaults to `"apache-2.0"`): Hub license id.
        base_model (`str` or `list[str]`, *optional*): repo id(s) this model was converted or fine-tuned from.
        extra_tags (`Iterable[str]`, *optional*): appended to the BAR tags (duplicates dropped).
        remote_code (`bool`, *optional*, defaults to `False`): the repo carries the remote-code shims
            (`write_remote_code_shims`); the snippets then pass `trust_remote_code=True` (required by diffusers for
            both `BARPipeline.from_pretrained` and `DiffusionPipeline.from_pretrained` on such repos).
    """
    validate_repo_id(repo_id)
    if not isinstance(license, str) or not license:
        raise ValueError(f"`license` must be a non-empty Hub license id, got {license!r}.")
    if isinstance(extra_tags, str):
        raise ValueError(f"`extra_tags` must be an iterable of tags, not a single string, got {extra_tags!r}.")
    tags = list(BAR_CARD_TAGS)
    for tag in extra_tags:
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"`extra_tags` entries must be non-empty strings, got {tag!r}.")
        if tag not in tags:
            tags.append(tag)

    transformer, scheduler, vqvae = pipeline.transformer, pipeline.scheduler, pipeline.vqvae
    tconf, sconf = transformer.config, scheduler.config
    num_classes = tconf.num_classes
    id2label = pipeline.id2label
    pixels = getattr(vqvae.config, "sample_size", None)
    example_label = next(iter(sorted(id2label.items())), (0, None))
    trust = ", trust_remote_code=True" if remote_code else ""

    card_data = ModelCardData(
        license=license,
        library_name="diffusers",
        pipeline_tag="unconditional-image-generation",
        tags=tags,
        base_model=base_model,
    )
    label_line = (
        f"{num_classes} classes; `id2label` names {len(id2label)} of them, so names such as "
        f"`{example_label[1].split(',')[0].strip()}` can be passed instead of ids."
        if id2label
        else f"{num_classes} classes (no `id2label` names saved: pass class ids `0..{num_classes - 1}`)."
    )
    allocation = sconf.get("tokens_allocation")
    lines = [
        f"# {repo_id.split('/')[-1]}",
        "",
        "Class-conditional image generator **BAR** (masked Bit AutoRegressive modeling) packaged for "
        "[`bar_hf`](https://pypi.org/project/bar_hf/): a binary-FSQ bit tokenizer (`vqvae`), a causal "
        "autoregressive transformer whose head unmasks each token's bits (`transformer`) and a bit-unmasking "
        "scheduler (`scheduler`), assembled as a diffusers `BARPipeline`.",
        "",
        "## Usage",
        "",
        "```bash",
        "pip install bar_hf",
        "```",
        "",
        "```python",
        "import torch",
        "import bar_hf  # registers the BAR classes (diffusers resolves third-party components from sys.modules)",
        "from bar_hf import BARPipeline",
        "",
        f'pipe = BARPipeline.from_pretrained("{repo_id}"{trust})',
        f"images = pipe([{example_label[0]}], generator=torch.Generator().manual_seed(0)).images",
        'images[0].save("sample.png")',
        "```",
        "",
        "A bare `DiffusionPipeline.from_pretrained(repo_id)` does not work for this repo: diffusers only downloads "
        "components whose library is diffusers or transformers (diffusers#5728). Use `BARPipeline` as above"
        + (
            ", or plain diffusers with remote code (the repo ships one-line files that re-export the installed "
            "`bar_hf` classes; `bar_hf` must be installed):"
            if remote_code
            else "."
        ),
    ]
    if remote_code:
        lines += [
            "",
            "```python",
            "from diffusers import DiffusionPipeline",
            "",
            f'pipe = DiffusionPipeline.from_pretrained("{repo_id}", trust_remote_code=True)',
            "```",
        ]
    lines += [
        "",
        "## Sampling defaults",
        "",
        "Stored with the pipeline and used when the call does not override them:",
        "",
        "| setting | value |",
        "|---|---|",
        f"| `guidance_scale` (CFG; on when > 1) | {_format_value(pipeline.config.guidance_scale)} |",
        f"| `guidance_schedule` | {_format_value(pipeline.config.guidance_schedule)} |",
        f"| scheduler | `{type(scheduler).__name__}` |",
        f"| `temperature` (τ0) | {_format_value(sconf.get('temperature'))} |",
        f"| `tokens_allocation` (bits revealed per head step) | {_format_value(allocation)} |",
        f"| `num_inference_steps` (head steps per token) | "
        f"{_format_value(len(allocation) if allocation else sconf.get('num_inference_steps'))} |",
        f"| `allocation_rule` (when only a step count is given) | {_format_value(sconf.get('allocation_rule'))} |",
        "",
        "Override per call, e.g. `pipe(labels, guidance_scale=4.0, tokens_allocation=[2, 2, 5, 7], temperature=2.0)`, "
        "or swap the scheduler with `pipe.scheduler = OtherScheduler.from_config(pipe.scheduler.config)`.",
        "",
        "## Model",
        "",
        f"- Classes: {label_line}",
        f"- Latent grid: {tconf.latent_height}×{tconf.latent_width} tokens of {tconf.num_bits} bits "
        f"(patch size {tconf.patch_size}, {tconf.bits_per_step} bits per autoregressive step)"
        + (f"; images of {pixels}×{pixels} pixels." if pixels else "."),
        f"- Transformer: {tconf.num_hidden_layers} layers, hidden size {tconf.hidden_size}, "
        f"`{tconf.head_type}` bit head.",
    ]
    if base_model:
        sources = [base_model] if isinstance(base_model, str) else list(base_model)
        lines.append(f"- Base model: {', '.join(f'`{s}`' for s in sources)}.")
    lines += ["", f"License: `{license}`.", ""]
    content = f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines)
    return ModelCard(content)


def push_pipeline_to_hub(
    pipeline: BARPipeline,
    repo_id: str,
    *,
    token: str | bool | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    remote_code: bool = False,
    endpoint: str | None = None,
    create_pr: bool = False,
    variant: str | None = None,
    license: str = "apache-2.0",
    base_model: str | list[str] | None = None,
    extra_tags: Iterable[str] = (),
    model_card: ModelCard | None = None,
) -> CommitInfo:
    """Upload a BAR pipeline (all components, `model_index.json`, README.md) to the Hub in one commit.

    Steps: `create_repo(exist_ok=True)` → `pipeline.save_pretrained(tmpdir)` (safetensors) → remote-code shims if
    `remote_code` → `README.md` from `bar_model_card` (or `model_card`) → `upload_folder`.

    Args:
        pipeline ([`BARPipeline`]): the pipeline to publish.
        repo_id (`str`): target repo (`"org/name"`), created if missing.
        token (`str` or `bool`, *optional*): Hub token; defaults to the logged-in token / `HF_TOKEN`.
        private (`bool`, *optional*): visibility of a newly created repo.
        commit_message (`str`, *optional*): defaults to `"Upload BARPipeline"`.
        remote_code (`bool`, *optional*, defaults to `False`): also write the `trust_remote_code` shims
            (`write_remote_code_shims`).
        endpoint (`str`, *optional*): Hub endpoint; defaults to `huggingface_hub.constants.ENDPOINT` (`HF_ENDPOINT`).
        create_pr (`bool`, *optional*, defaults to `False`): open a pull request instead of committing to `main`.
        variant (`str`, *optional*): weight variant passed to `save_pretrained` (e.g. `"fp16"`).
        license, base_model, extra_tags: forwarded to `bar_model_card`.
        model_card (`ModelCard`, *optional*): use this card instead of generating one.

    Returns:
        `huggingface_hub.CommitInfo` of the upload.
    """
    validate_repo_id(repo_id)
    api = HfApi(endpoint=endpoint, token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    card = model_card or bar_model_card(
        pipeline, repo_id, license=license, base_model=base_model, extra_tags=extra_tags, remote_code=remote_code
    )
    with tempfile.TemporaryDirectory() as tmpdir:
        save_kwargs: dict[str, Any] = {"safe_serialization": True}
        if variant is not None:
            save_kwargs["variant"] = variant
        pipeline.save_pretrained(tmpdir, **save_kwargs)
        if remote_code:
            write_remote_code_shims(tmpdir, type(pipeline))
        card.save(os.path.join(tmpdir, "README.md"))
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=tmpdir,
            commit_message=commit_message or f"Upload {type(pipeline).__name__}",
            create_pr=create_pr,
        )
