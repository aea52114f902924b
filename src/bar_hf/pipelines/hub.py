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

from ..models.modeling_bar import BARForCausalImageModeling
from ..models.vq_model import BARVQModel
from .loading import check_component_weights, check_folder_before_load

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

    from .pipeline_bar import BARPipeline

__all__ = [
    "BARHubMixin",
    "BAR_CARD_TAGS",
    "PIPELINE_SHIM_MODULE",
    "bar_model_card",
    "push_pipeline_to_hub",
    "write_remote_code_shims",
]

#: Module file (without `.py`) written at the repo root by `write_remote_code_shims`.
PIPELINE_SHIM_MODULE = "pipeline_bar_hf"

#: Pipeline classes of bar_hf (a folder's `_class_name` the shim can re-export from the package root).
BAR_PIPELINE_CLASSES = ("BARPipeline", "BARInpaintPipeline")

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
            if class_name not in BAR_PIPELINE_CLASSES:
                raise ValueError(
                    f"`model_index.json['_class_name']` is {class_name!r}, which is not a `bar_hf` pipeline "
                    f"{BAR_PIPELINE_CLASSES}; pass `pipeline_class` explicitly."
                )
            module, name = "bar_hf", class_name  # the package root re-exports every pipeline class
        else:
            module = _check_importable_module("`pipeline_class.__module__`", pipeline_class.__module__)
            name = pipeline_class.__name__
        written[f"{PIPELINE_SHIM_MODULE}.py"] = _shim_source(module, name)
        index["_class_name"] = [PIPELINE_SHIM_MODULE, name]

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


def _card_tags(extra_tags: Iterable[str]) -> list[str]:
    if isinstance(extra_tags, str):
        raise ValueError(f"`extra_tags` must be an iterable of tags, not a single string, got {extra_tags!r}.")
    tags = list(BAR_CARD_TAGS)
    for tag in extra_tags:
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"`extra_tags` entries must be non-empty strings, got {tag!r}.")
        if tag not in tags:
            tags.append(tag)
    return tags


def _card_usage(repo_id: str, example_label: int, remote_code: bool) -> list[str]:
    """The card's title, description and "Usage" section."""
    trust = ", trust_remote_code=True" if remote_code else ""
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
        f"images = pipe([{example_label}], generator=torch.Generator().manual_seed(0)).images",
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
    return lines


def _card_settings(pipeline: BARPipeline, label_line: str) -> list[str]:
    """The card's "Sampling defaults" and "Model" sections."""
    tconf, sconf, scheduler = pipeline.transformer.config, pipeline.scheduler.config, pipeline.scheduler
    pixels = getattr(pipeline.vqvae.config, "sample_size", None)
    allocation = sconf.get("tokens_allocation")
    return [
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
        f"(patch size {tconf.patch_size}, {tconf.bits_per_token} bits per autoregressive step)"
        + (f"; images of {pixels}×{pixels} pixels." if pixels else "."),
        f"- Transformer: {tconf.num_hidden_layers} layers, hidden size {tconf.hidden_size}, "
        f"`{tconf.head_type}` bit head.",
    ]


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
    tags = _card_tags(extra_tags)

    num_classes = pipeline.transformer.config.num_classes
    id2label = pipeline.id2label
    example_label = next(iter(sorted(id2label.items())), (0, None))

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
    lines = _card_usage(repo_id, example_label[0], remote_code)
    lines += _card_settings(pipeline, label_line)
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


class BARHubMixin:
    """`save_pretrained` / `push_to_hub` / `from_pretrained` / `download` of the BAR pipelines: safetensors only, a BAR
    model card, the optional remote-code export and a strict weight check at load time."""

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        variant: str | None = None,
        max_shard_size: int | str | None = None,
        push_to_hub: bool = False,
        remote_code: bool = False,
        **kwargs,
    ) -> None:
        """Save the pipeline in the canonical layout (load it with `BARPipeline.from_pretrained`).

        Args:
            save_directory (`str` or `os.PathLike`): target folder (created if missing).
            safe_serialization, variant, max_shard_size: as in `DiffusionPipeline.save_pretrained`.
            push_to_hub (`bool`, *optional*, defaults to `False`): then upload with [`~BARPipeline.push_to_hub`]
                (BAR model card, not diffusers' generic one); `repo_id` defaults to the folder name and `token`,
                `private`, `commit_message`, `create_pr`, `license`, `base_model`, `extra_tags`, `endpoint` are
                forwarded.
            remote_code (`bool`, *optional*, defaults to `False`): also write the one-line re-export files
                (`bar_hf.pipelines.hub.write_remote_code_shims`) so that plain
                `DiffusionPipeline.from_pretrained(folder_or_repo, trust_remote_code=True)` works for users who have
                `bar_hf` installed (`BARPipeline.from_pretrained` then needs `trust_remote_code=True` too).
        """
        self._check_no_unfused_lora()  # a transformer with adapters would save only the adapter
        self._check_no_layerwise_casting("`save_pretrained`")  # the weights were rounded to the storage dtype
        push_keys = (
            "repo_id",
            "token",
            "private",
            "commit_message",
            "create_pr",
            "license",
            "base_model",
            "extra_tags",
            "endpoint",
        )
        push_kwargs = {key: kwargs.pop(key) for key in push_keys if key in kwargs}
        super().save_pretrained(
            save_directory,
            safe_serialization=safe_serialization,
            variant=variant,
            max_shard_size=max_shard_size,
            **kwargs,
        )
        if remote_code:
            write_remote_code_shims(save_directory, type(self))
        if push_to_hub:
            repo_id = push_kwargs.pop("repo_id", None) or os.path.basename(os.path.normpath(save_directory))
            self.push_to_hub(
                repo_id, safe_serialization=safe_serialization, variant=variant, remote_code=remote_code, **push_kwargs
            )

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: str | None = None,
        subfolder: str | None = None,
        *,
        remote_code: bool = False,
        license: str = "apache-2.0",
        base_model: str | list[str] | None = None,
        extra_tags: Iterable[str] = (),
        endpoint: str | None = None,
    ):
        """Upload the pipeline (all components, `model_index.json`) with a BAR model card in one commit.

        Same positional arguments as diffusers' `push_to_hub`; the README shows `BARPipeline` usage, the sampling
        defaults, license and tags (see `bar_hf.pipelines.hub.bar_model_card`) instead of diffusers' generic card.

        Args:
            repo_id (`str`): target repo (`"org/name"`), created if missing.
            commit_message, private, token, create_pr, variant: as in diffusers' `push_to_hub`.
            safe_serialization (`bool`, *optional*, defaults to `True`): must be `True` (safetensors only).
            subfolder (`str`, *optional*): not supported for pipelines, must be `None`.
            remote_code (`bool`, *optional*, defaults to `False`): also upload the `trust_remote_code` re-export files.
            license, base_model, extra_tags: model card metadata (`bar_model_card`).
            endpoint (`str`, *optional*): Hub endpoint; defaults to `HF_ENDPOINT` / huggingface.co.

        Returns:
            `huggingface_hub.CommitInfo` of the upload.
        """
        if not safe_serialization:
            raise ValueError(
                "`safe_serialization` must be True: BAR pipelines are pushed as safetensors only, got False."
            )
        if subfolder is not None:
            raise ValueError(f"`subfolder` is not supported when pushing a whole pipeline, got {subfolder!r}.")
        return push_pipeline_to_hub(
            self,
            repo_id,
            token=token,
            private=private,
            commit_message=commit_message,
            remote_code=remote_code,
            endpoint=endpoint,
            create_pr=create_pr,
            variant=variant,
            license=license,
            base_model=base_model,
            extra_tags=extra_tags,
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """`DiffusionPipeline.from_pretrained`, then a strict weight check: a model component whose safetensors keys
        or shapes differ from its config (missing or unexpected tensors) raises a `ValueError` naming the component
        and the keys, instead of transformers'/diffusers' warning and randomly initialised weights. Components
        passed in as arguments are not checked."""
        folder = str(pretrained_model_name_or_path)
        if os.path.isdir(folder):  # configs that disagree with their weights fail here, naming the component
            components = {"vqvae": BARVQModel, "transformer": BARForCausalImageModeling}
            components = {k: v for k, v in components.items() if k not in kwargs}  # passed-in ones are not checked
            check_folder_before_load(folder, components, kwargs.get("variant"))
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        if not os.path.isdir(folder):
            folder = cls.download(folder, **kwargs)  # cached by the load above
        for name in ("vqvae", "transformer"):
            if name not in kwargs:
                check_component_weights(name, getattr(pipe, name), os.path.join(folder, name), kwargs.get("variant"))
        return pipe

    @classmethod
    def download(cls, pretrained_model_name, **kwargs) -> str:
        """Download a pipeline repo with `huggingface_hub.snapshot_download` (diffusers' own `download` refuses
        component libraries that are not diffusers modules). Local folders are returned as they are."""
        if os.path.isdir(pretrained_model_name):
            return pretrained_model_name
        from huggingface_hub import snapshot_download

        allowed = {"cache_dir", "revision", "token", "local_files_only", "force_download"}
        options = {k: v for k, v in kwargs.items() if k in allowed and v is not None}
        return snapshot_download(
            pretrained_model_name,
            allow_patterns=[
                "model_index.json",
                "*.json",
                "*/*.json",
                "*/*.safetensors",
                "*.safetensors",
                "README.md",
                "*.py",
                "*/*.py",  # remote-code re-export files (downloading them does not run them)
            ],
            **options,
        )
