"""Import transformers' generic test suite from the sdist cache that `scripts/fetch_transformers_tests.py` fills.

The sdist's `tests/` folder is loaded as the package `transformers_upstream_tests` (so it never shadows bar_hf's own
`tests/`). Three modules that `test_modeling_common.py` / `test_configuration_common.py` import are not part of the
sdist; bar_hf registers minimal stand-ins for them (no upstream code is copied):

* `exporters.test_export.ExportTesterMixin` → an empty mixin (the export tests are not shipped, so none run);
* `generation.test_utils.GenerationTesterMixin` → an empty mixin (BAR models do not `generate`; sampling is
  `BARPipeline`);
* `utils.test_configuration_utils.config_common_kwargs` → non-default values of `PreTrainedConfig`'s common
  attributes, which `ConfigTester.check_config_arguments_init` checks are stored.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

import transformers

PACKAGE = "transformers_upstream_tests"


def upstream_tests_dir() -> Path:
    """Where the sdist's `tests/` lives (same rule as `scripts/fetch_transformers_tests.py`)."""
    override = os.environ.get("BAR_HF_TRANSFORMERS_TESTS")
    root = (
        Path(override)
        if override
        else Path.home() / ".cache" / "bar_hf" / f"transformers-{transformers.__version__}-tests"
    )
    return root / "tests"


def _module(name: str, path: Path | None = None, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    if path is not None:
        module.__path__ = [str(path)]
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


class ExportTesterMixin:
    """Stand-in: transformers' `tests/exporters` is not in the sdist."""


class GenerationTesterMixin:
    """Stand-in: transformers' `tests/generation` is not in the sdist (and BAR models cannot `generate`)."""


CONFIG_COMMON_KWARGS = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "architectures": ["BARForCausalImageModeling"],
    "id2label": {0: "label"},
    "label2id": {"label": "0"},
    "problem_type": "regression",
}


def load_upstream():
    """Return `(ModelTesterMixin, ConfigTester)` from the cached sdist; raise `FileNotFoundError` if not fetched."""
    tests_dir = upstream_tests_dir()
    if not (tests_dir / "test_modeling_common.py").is_file():
        raise FileNotFoundError(
            f"transformers {transformers.__version__} generic tests not found in {tests_dir}; run "
            "`python scripts/fetch_transformers_tests.py` (done by `make test`) with access to PyPI."
        )
    if PACKAGE not in sys.modules:
        _module(PACKAGE, tests_dir)
        _module(f"{PACKAGE}.exporters", tests_dir / "exporters")
        _module(f"{PACKAGE}.exporters.test_export", ExportTesterMixin=ExportTesterMixin)
        _module(f"{PACKAGE}.generation", tests_dir / "generation")
        _module(f"{PACKAGE}.generation.test_utils", GenerationTesterMixin=GenerationTesterMixin)
        _module(f"{PACKAGE}.utils", tests_dir / "utils")
        _module(f"{PACKAGE}.utils.test_configuration_utils", config_common_kwargs=CONFIG_COMMON_KWARGS)
    modeling = importlib.import_module(f"{PACKAGE}.test_modeling_common")
    configuration = importlib.import_module(f"{PACKAGE}.test_configuration_common")
    return modeling, configuration
