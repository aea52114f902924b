"""Resolve config fields from the tensors, the authors' YAML, a preset and overrides (part of [`bar_hf.conversion.convert`]).

[`Resolver`] collects every disagreement between sources into one error; the helpers count layers and validate
override names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from .keys import UNSET


class Resolver:
    """Resolve config fields from several sources and collect every disagreement into one error.

    Tensor-revealed values (`checkpoint`, `tokenizer`) are authoritative: all of them, the YAML, the preset and
    any override must agree with them. The YAML and the preset must agree with each other. An override that no tensor
    contradicts wins over the YAML, the preset and the defaults.
    """

    def __init__(self, what: str, overrides: Mapping[str, Any]):
        self.what = what
        self.overrides = dict(overrides)
        self.errors: list[str] = []

    @staticmethod
    def _same(a: Any, b: Any) -> bool:
        if isinstance(a, bool) or isinstance(b, bool):
            return a == b
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            return len(a) == len(b) and all(Resolver._same(x, y) for x, y in zip(a, b))
        return a == b

    def resolve(self, name: str, *, default: Any = UNSET, required: bool = True, **sources: Any) -> Any:
        """`sources`: keyword (`checkpoint`, `tokenizer`, `yaml`, `preset`) → `(value, description)` or `UNSET`.

        Returns the override if given, else the first available of checkpoint, tokenizer, YAML, preset, `default`.
        """
        order = ("checkpoint", "tokenizer", "yaml", "preset")
        given = [(kind, sources[kind]) for kind in order if sources.get(kind, UNSET) is not UNSET]
        authoritative = [(kind, src) for kind, src in given if kind in ("checkpoint", "tokenizer")]
        compared = authoritative + [(kind, src) for kind, src in given if kind in ("yaml", "preset")]
        listed = list(given)
        if name in self.overrides:
            override = ("override", (self.overrides[name], f"{self.what}_overrides[{name!r}]"))
            listed.append(override)
            if authoritative:
                compared.append(override)
        if any(not self._same(value, compared[0][1][0]) for _, (value, _) in compared):
            values = "; ".join(f"{kind} {value!r} ({desc})" for kind, (value, desc) in listed)
            self.errors.append(f"`{name}` disagrees between sources: {values}")
        if name in self.overrides:
            return self.overrides[name]
        if given:
            return given[0][1][0]
        if default is not UNSET:
            return default
        if required:
            self.errors.append(f"`{name}` cannot be determined from the files: pass it in `{self.what}_overrides`")
        return None

    def raise_errors(self) -> None:
        if self.errors:
            raise ValueError(
                f"{self.what} config conflicts ({len(self.errors)}); fix the YAML/preset/overrides or check that the "
                "right files were passed:\n  " + "\n  ".join(self.errors)
            )


def source_of(value: Any, description: str) -> tuple[Any, str] | object:
    return UNSET if value is UNSET or value is None else (value, description)


def validate_overrides(what: str, overrides: Mapping[str, Any] | None, allowed: set[str]) -> dict:
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(f"`{what}_overrides` has unknown fields {unknown}; valid fields are {sorted(allowed)}.")
    return overrides


def _layer_indices(state_dict: Mapping[str, Any], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for key in state_dict for m in [pattern.match(key)] if m})


def count_layers(state_dict: Mapping[str, Any], prefix: str, what: str) -> int:
    indices = _layer_indices(state_dict, prefix)
    if indices and indices != list(range(len(indices))):
        gaps = sorted(set(range(indices[-1] + 1)) - set(indices))
        raise ValueError(f"{what}: layer indices under `{prefix}` must be 0..n-1, layers {gaps} are missing.")
    return len(indices)


def perfect_square_root(value: int) -> int | None:
    root = math.isqrt(value) if value >= 0 else -1
    return root if root >= 0 and root * root == value else None


def init_parameters(cls) -> set[str]:
    import inspect

    kinds = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name for p in params if p.name != "self" and p.kind not in kinds}
