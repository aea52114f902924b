"""LoRA fine-tuning of the BAR generator with `peft` (optional extra: `pip install "bar_hf[lora]"`).

Adapters are injected with peft's integration API (`peft.functional`: `inject_adapter_in_model`,
`get/set_peft_model_state_dict`, `set_adapter`) and stored in peft's format (`adapter_config.json` +
`adapter_model.safetensors`, keys prefixed `base_model.model.`), so `peft.PeftModel.from_pretrained(transformer,
folder)` reads them too. (transformers' own `add_adapter` / `load_adapter` would do the same but require
peft >= 0.22.) [`BARLoraLoaderMixin`], inherited by [`BARPipeline`], gives the pipeline the methods a diffusers
user expects: `load_lora_weights`, `save_lora_weights`, `set_adapters`, `disable_lora` / `enable_lora`,
`fuse_lora` / `unfuse_lora`, `unload_lora_weights`, `get_active_adapters`. `examples/generator/train_bar.py --lora_rank R`
trains and saves only an adapter with the helpers at the end of this module.

    pipe = BARPipeline.from_pretrained(bar_hf.bundled_model_path())
    pipe.load_lora_weights("runs/bar_lora/lora")       # the adapter folder written by train_bar.py
    images = pipe(["Ankle boot"], generator=torch.Generator().manual_seed(0)).images
    pipe.unload_lora_weights()                          # back to the base model
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = [
    "DEFAULT_LORA_TARGET_MODULES",
    "BARLoraLoaderMixin",
    "add_lora_adapter",
    "bar_lora_config",
    "check_lora_adapter",
    "load_lora_adapter",
    "lora_layers",
    "remove_lora_adapter",
    "save_lora_adapter",
    "unload_lora",
]

#: Linear layers adapted by default: attention `qkv` / `proj` and SwiGLU `w12` / `w3` of every backbone block and of
#: the MBM head's ResBlocks (peft matches module names by suffix).
DEFAULT_LORA_TARGET_MODULES = ("qkv", "proj", "w12", "w3")
ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."  # what `PeftModel.save_pretrained` writes before every key


def _require_peft():
    try:
        import peft
        import peft.functional
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError('LoRA needs `peft`: pip install "bar_hf[lora]"') from error
    return peft


def bar_lora_config(
    rank: int,
    alpha: float | None = None,
    target_modules: list[str] | tuple[str, ...] | str | None = None,
    dropout: float = 0.0,
    init_lora_weights: bool | str = True,
):
    """A `peft.LoraConfig` for the BAR generator (`alpha` defaults to `rank`, i.e. scale 1)."""
    peft = _require_peft()
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"`rank` must be a positive int, got {rank!r}.")
    if alpha is not None and not alpha > 0:
        raise ValueError(f"`alpha` must be > 0, got {alpha!r}.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}.")
    targets = list(DEFAULT_LORA_TARGET_MODULES) if target_modules is None else target_modules
    if isinstance(targets, (list, tuple)):
        targets = list(targets)
        if not targets:
            raise ValueError("`target_modules` must name at least one module.")
    return peft.LoraConfig(
        r=rank,
        lora_alpha=rank if alpha is None else alpha,
        target_modules=targets,
        lora_dropout=dropout,
        init_lora_weights=init_lora_weights,
    )


def lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """`(name, layer)` for every peft tuner layer injected into `model`."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [(name, module) for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)]


def add_lora_adapter(model: nn.Module, config, adapter_name: str = "default") -> list[nn.Parameter]:
    """Inject a LoRA adapter into `model` and activate it; the base weights are frozen (peft) and the adapter's
    parameters, returned, are trainable unless `config.inference_mode`."""
    peft = _require_peft()
    configs = dict(getattr(model, "peft_config", None) or {})
    if adapter_name in configs:
        raise ValueError(f"`adapter_name` {adapter_name!r} is already loaded; unload it or pick another name.")
    peft.functional.inject_adapter_in_model(config, model, adapter_name=adapter_name)
    model.peft_config = {**configs, adapter_name: config}  # peft keeps only the newest one there
    peft.functional.set_adapter(model, adapter_name, inference_mode=config.inference_mode)
    params = [p for n, p in model.named_parameters() if "lora_" in n and f".{adapter_name}." in n]
    if not params:
        raise ValueError(f"no module of the model matched `target_modules` {config.target_modules!r}.")
    return params


def save_lora_adapter(model: nn.Module, save_directory: str | os.PathLike, adapter_name: str = "default") -> Path:
    """Write one adapter as `adapter_config.json` + `adapter_model.safetensors` (peft's format)."""
    import copy

    from safetensors.torch import save_file

    peft = _require_peft()
    configs = getattr(model, "peft_config", None) or {}
    if adapter_name not in configs:
        raise ValueError(f"`adapter_name` {adapter_name!r} is not loaded; loaded: {sorted(configs)}.")
    state = peft.functional.get_peft_model_state_dict(model, adapter_name=adapter_name)
    folder = Path(save_directory)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {_PEFT_PREFIX + key: value.detach().contiguous().cpu() for key, value in state.items()}
    save_file(tensors, folder / ADAPTER_WEIGHTS_NAME, metadata={"format": "pt"})
    config = copy.deepcopy(configs[adapter_name])
    config.base_model_name_or_path = getattr(model, "name_or_path", None) or config.base_model_name_or_path
    config.inference_mode = True
    config.save_pretrained(str(folder))
    return folder


def _base_linears(model: nn.Module) -> dict[str, nn.Module]:
    """Module name → base layer of every module peft could adapt (LoRA-wrapped layers by their own name)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    found = {}
    for name, module in model.named_modules():
        parts = name.split(".")
        if "base_layer" in parts or any(part.startswith("lora_") for part in parts):
            continue  # inside an already injected layer
        found[name] = module.get_base_layer() if isinstance(module, BaseTunerLayer) else module
    return found


def check_lora_adapter(model: nn.Module, config, state: dict[str, torch.Tensor]) -> None:
    """Check that an adapter (`config` + peft state dict without the `base_model.model.` prefix) fits `model` before
    anything is injected: its target modules exist, every adapted layer of the model gets `lora_A` / `lora_B`
    weights (an adapter trained on a shallower model is refused), no weight is left over and every shape matches.
    Raises a `ValueError` naming the first mismatches."""
    from peft.tuners.tuners_utils import check_target_module_exists

    if str(getattr(config, "peft_type", "")).split(".")[-1].upper() != "LORA":
        raise ValueError(
            f"`adapter_config` must describe a LoRA adapter (`peft_type` LORA), got {config.peft_type!r}."
        )
    targets = {
        name: module
        for name, module in _base_linears(model).items()
        if name and check_target_module_exists(config, name)
    }
    if not targets:
        raise ValueError(
            f"`pretrained_model_name_or_path_or_dict`: the adapter's `target_modules` {config.target_modules!r} match no "
            "module of the model (not found in the base model)."
        )
    problems, expected = [], set()
    for name, module in targets.items():
        if not isinstance(module, nn.Linear):
            continue  # other layer kinds: peft checks them while loading (rolled back on failure)
        a_key, b_key = f"{name}.lora_A.weight", f"{name}.lora_B.weight"
        expected |= {a_key, b_key}
        if a_key not in state or b_key not in state:
            problems.append(f"no weights for adapted layer `{name}`")
            continue
        a, b = state[a_key], state[b_key]
        rank = a.shape[0] if a.dim() == 2 else None
        if a.dim() != 2 or a.shape[1] != module.in_features or rank is None:
            problems.append(f"`{a_key}` has shape {tuple(a.shape)}, expected (r, {module.in_features})")
        elif b.dim() != 2 or tuple(b.shape) != (module.out_features, rank):
            problems.append(f"`{b_key}` has shape {tuple(b.shape)}, expected ({module.out_features}, {rank})")
        elif not getattr(config, "rank_pattern", None) and rank != config.r:
            problems.append(f"`{a_key}` has rank {rank} but the adapter config says r={config.r}")
    leftover = sorted(key for key in state if key not in expected and "lora_magnitude_vector" not in key)
    problems += [f"weight `{key}` matches no adapted layer of this model" for key in leftover]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ValueError(
            f"`pretrained_model_name_or_path_or_dict`: the adapter does not fit this model: {'; '.join(problems[:5])}{more}."
        )


def remove_lora_adapter(model: nn.Module, adapter_name: str) -> None:
    """Remove one adapter from `model`; layers left without any adapter go back to their base layer."""
    configs = dict(getattr(model, "peft_config", None) or {})
    configs.pop(adapter_name, None)
    for name, layer in lora_layers(model):
        if adapter_name in getattr(layer, "lora_A", {}) or adapter_name in getattr(layer, "lora_B", {}):
            for attribute in layer.adapter_layer_names + layer.other_param_names:
                getattr(layer, attribute, {}).pop(adapter_name, None)
        if not getattr(layer, "lora_A", {}):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, layer.get_base_layer())
    if configs:
        model.peft_config = configs
    elif hasattr(model, "peft_config"):
        del model.peft_config


def _weights_file(path: Path) -> bool:
    return any((path / name).is_file() for name in (ADAPTER_WEIGHTS_NAME, "adapter_model.bin"))


def _read_adapter(source, adapter_config, hub_kwargs) -> tuple:
    """`(peft config, state dict)` of an adapter folder / Hub id, or of a state dict with its config dict."""
    peft = _require_peft()
    from peft.utils import load_peft_weights

    if isinstance(source, dict):
        if not isinstance(adapter_config, dict):
            raise ValueError(
                f"`adapter_config` (a LoraConfig as a dict) is required when a state dict is given, got {adapter_config!r}."
            )
        if not all(isinstance(value, torch.Tensor) for value in source.values()):
            raise TypeError("`pretrained_model_name_or_path_or_dict` as a dict must map weight names to tensors.")
        try:
            config = peft.get_peft_config(dict(adapter_config))
        except (TypeError, KeyError, ValueError) as error:
            raise ValueError(
                f"`adapter_config` is not a valid peft config ({type(error).__name__}: {error})."
            ) from None
        state = source
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_file():
            raise ValueError(
                f"`pretrained_model_name_or_path_or_dict` {str(path)!r} is a file, not an adapter folder."
            )
        if not path.exists():
            from huggingface_hub.utils import HFValidationError, validate_repo_id

            try:
                validate_repo_id(str(source))
            except HFValidationError:
                raise ValueError(
                    f"`pretrained_model_name_or_path_or_dict` {str(source)!r} is neither an existing adapter folder nor "
                    "a Hub repo id ('org/name')."
                ) from None
        if path.is_dir() and not (path / ADAPTER_CONFIG_NAME).is_file():
            raise ValueError(
                f"`pretrained_model_name_or_path_or_dict` {str(path)!r} holds no `{ADAPTER_CONFIG_NAME}` (not a LoRA "
                "adapter folder)."
            )
        if path.is_dir() and not _weights_file(path):
            raise ValueError(
                f"`pretrained_model_name_or_path_or_dict` {str(path)!r} holds `{ADAPTER_CONFIG_NAME}` but no adapter weights (`{ADAPTER_WEIGHTS_NAME}`): an incomplete "
                "adapter folder."
            )
        config = peft.PeftConfig.from_pretrained(str(source), **hub_kwargs)
        state = load_peft_weights(str(source), device="cpu", **hub_kwargs)
    else:
        raise TypeError(
            "`pretrained_model_name_or_path_or_dict` must be a folder, a Hub id or a state dict, got "
            f"{type(source).__name__}."
        )
    return config, state


def load_lora_adapter(
    model: nn.Module,
    pretrained_model_name_or_path_or_dict: str | os.PathLike | dict[str, torch.Tensor],
    adapter_name: str = "default",
    adapter_config: dict | None = None,
    **hub_kwargs,
) -> None:
    """Inject an adapter saved by [`save_lora_adapter`] / peft (a folder or Hub id), or a peft state dict with its
    `adapter_config` dict, into `model` (frozen, inference mode) and activate it.

    Atomic: the adapter is checked against the model first ([`check_lora_adapter`]); a refused or failed load leaves
    the model, its adapters and the active ones as they were."""
    peft = _require_peft()
    if not isinstance(adapter_name, str) or not adapter_name:
        raise TypeError(f"`adapter_name` must be a non-empty str, got {adapter_name!r}.")
    if adapter_name in (getattr(model, "peft_config", None) or {}):
        raise ValueError(f"`adapter_name` {adapter_name!r} is already loaded; unload it or pick another name.")
    config, state = _read_adapter(pretrained_model_name_or_path_or_dict, adapter_config, hub_kwargs)
    config.inference_mode = True
    state = {key.removeprefix(_PEFT_PREFIX): value for key, value in state.items()}
    check_lora_adapter(model, config, state)
    layers = lora_layers(model)
    active = list(layers[0][1].active_adapters) if layers else []
    try:
        add_lora_adapter(model, config, adapter_name)
        result = peft.functional.set_peft_model_state_dict(model, state, adapter_name=adapter_name)
        unexpected = [key for key in getattr(result, "unexpected_keys", []) if "lora_" in key]
        if unexpected:
            raise ValueError(
                f"`pretrained_model_name_or_path_or_dict`: the adapter does not fit this model; unexpected keys: "
                f"{unexpected[:5]}"
            )
    except Exception:
        remove_lora_adapter(model, adapter_name)
        if active:
            peft.functional.set_adapter(model, active, inference_mode=True)
        raise


def unload_lora(model: nn.Module) -> None:
    """Replace every LoRA layer by its base layer (which holds the fused weights if `fuse_lora` was called)."""
    for name, layer in lora_layers(model):
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config


def _check_weight(weight, name: str) -> float | None:
    """`None` or a finite real number (numpy / torch scalars too) → float."""
    if weight is None:
        return None
    if isinstance(weight, (np.generic, torch.Tensor)) and np.ndim(weight) == 0 and not isinstance(weight, np.bool_):
        weight = weight.item()
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
        raise TypeError(f"`{name}` must be a finite number (or a list of them), got {weight!r}.")
    if not math.isfinite(weight):
        raise ValueError(f"`{name}` must be finite, got {weight!r}.")
    return float(weight)


class BARLoraLoaderMixin:
    """diffusers-style LoRA methods for a pipeline whose `transformer` is a [`BARForCausalImageModeling`]."""

    def _check_no_unfused_lora(self) -> None:
        if getattr(self.transformer, "peft_config", None):
            raise ValueError(
                "the transformer holds LoRA adapters: save them with `save_lora_weights(folder)`, or bake them in "
                "with `fuse_lora()` then `unload_lora_weights()` before `save_pretrained`."
            )

    def load_lora_weights(
        self,
        pretrained_model_name_or_path_or_dict: str | os.PathLike | dict[str, torch.Tensor],
        adapter_name: str | None = None,
        adapter_config: dict | None = None,
        **kwargs,
    ) -> None:
        """Load a LoRA adapter into `self.transformer` and activate it (alone).

        Args:
            pretrained_model_name_or_path_or_dict: a folder or Hub id holding `adapter_config.json` +
                `adapter_model.safetensors` (what [`save_lora_weights`] and `train_bar.py --lora_rank` write), or a
                peft state dict (then pass `adapter_config`, a `LoraConfig` as a dict).
            adapter_name (`str`, *optional*): defaults to `"default"` (`"default_<n>"` if that name is taken).
            kwargs: Hub download arguments (`token`, `revision`, `subfolder`, ...).
        """
        _require_peft()
        existing = set(getattr(self.transformer, "peft_config", None) or {})
        if adapter_name is None:
            adapter_name, n = "default", 0
            while adapter_name in existing:
                n += 1
                adapter_name = f"default_{n}"
        load_lora_adapter(
            self.transformer, pretrained_model_name_or_path_or_dict, adapter_name, adapter_config, **kwargs
        )

    def save_lora_weights(self, save_directory: str | os.PathLike, adapter_name: str | None = None) -> None:
        """Write one adapter of `self.transformer` (the first active one by default) in peft's format."""
        _require_peft()
        if not getattr(self.transformer, "peft_config", None):
            raise ValueError("`adapter_name`: the transformer has no LoRA adapter to save (load or add one first).")
        save_lora_adapter(self.transformer, save_directory, adapter_name or self.get_active_adapters()[0])

    def get_active_adapters(self) -> list[str]:
        layers = lora_layers(self.transformer) if getattr(self.transformer, "peft_config", None) else []
        return list(layers[0][1].active_adapters) if layers else []

    def set_adapters(self, adapter_names: str | list[str], adapter_weights: float | list[float] | None = None) -> None:
        """Activate adapters, optionally each with a weight (a finite number multiplying its `alpha / r`; `None` = 1).
        A refused call changes nothing."""
        peft = _require_peft()
        names = [adapter_names] if isinstance(adapter_names, str) else adapter_names
        if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
            raise TypeError(
                f"`adapter_names` must be an adapter name or a non-empty list of them, got {adapter_names!r}."
            )
        names = list(names)
        weights = adapter_weights if isinstance(adapter_weights, (list, tuple)) else [adapter_weights] * len(names)
        if len(weights) != len(names):
            raise ValueError(f"`adapter_weights` has {len(weights)} entries for {len(names)} adapters.")
        weights = [_check_weight(weight, "adapter_weights") for weight in weights]
        loaded = set(getattr(self.transformer, "peft_config", None) or {})
        if not set(names) <= loaded:
            raise ValueError(f"`adapter_names` {names} are not all loaded; loaded: {sorted(loaded)}.")
        peft.functional.set_adapter(self.transformer, names, inference_mode=True)
        for _, layer in lora_layers(self.transformer):
            for name, weight in zip(names, weights):
                if name in getattr(layer, "lora_A", {}):
                    layer.set_scale(name, 1.0 if weight is None else weight)

    def disable_lora(self) -> None:
        for _, layer in lora_layers(self.transformer):
            layer.enable_adapters(False)

    def enable_lora(self) -> None:
        for _, layer in lora_layers(self.transformer):
            layer.enable_adapters(True)

    def fuse_lora(self, lora_scale: float = 1.0, adapter_names: list[str] | None = None) -> None:
        """Merge the active (or given) adapters into the base weights (`unfuse_lora` undoes it)."""
        lora_scale = _check_weight(lora_scale, "lora_scale")
        if lora_scale is None:
            raise TypeError("`lora_scale` must be a finite number, got None.")
        if adapter_names is not None:
            names = [adapter_names] if isinstance(adapter_names, str) else adapter_names
            loaded = set(getattr(self.transformer, "peft_config", None) or {})
            if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n in loaded for n in names):
                raise ValueError(
                    f"`adapter_names` must name loaded adapters ({sorted(loaded)}), got {adapter_names!r}."
                )
            adapter_names = list(names)
        for _, layer in lora_layers(self.transformer):
            layer.scale_layer(lora_scale)
            layer.merge(adapter_names=adapter_names)
            layer.unscale_layer(lora_scale)
            layer._bar_fuse_scale = lora_scale  # `unfuse_lora` removes exactly what was added

    def unfuse_lora(self) -> None:
        for _, layer in lora_layers(self.transformer):
            scale = getattr(layer, "_bar_fuse_scale", 1.0)
            layer.scale_layer(scale)
            layer.unmerge()
            layer.unscale_layer(scale)

    def unload_lora_weights(self) -> None:
        """Remove every adapter (fused weights stay fused); `save_pretrained` then works again."""
        unload_lora(self.transformer)
