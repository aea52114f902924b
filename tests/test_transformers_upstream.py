"""transformers' own generic test suite (`ModelTesterMixin`, `ConfigTester` from the 5.24 sdist) run against BAR.

`make test` fetches the sdist once (`scripts/fetch_transformers_tests.py`, cached outside the repo) and sets
`BAR_HF_REQUIRE_UPSTREAM_TESTS=1`, so there a missing cache is an error; elsewhere this module is skipped with the
command to run. Every upstream test that does not apply is listed in `UPSTREAM_SKIPS` with its reason.
"""

from __future__ import annotations

import os
import unittest
import unittest.mock

import pytest
import torch
from torch import nn
from transformers import initialization as init
from upstream_transformers import load_upstream

from bar_hf import BARConfig, BARForCausalImageModeling, BARModel
from bar_hf.models.modeling_bar import BARPreTrainedModel

try:
    modeling_common, configuration_common = load_upstream()
except FileNotFoundError as error:
    if os.environ.get("BAR_HF_REQUIRE_UPSTREAM_TESTS") == "1":
        raise
    pytest.skip(str(error), allow_module_level=True)

ModelTesterMixin = modeling_common.ModelTesterMixin
ConfigTester = configuration_common.ConfigTester

#: upstream test name -> why it does not apply to BAR (one line each; applied by `_apply_skips`)
UPSTREAM_SKIPS: dict[str, str] = {}
#: additional skips for the backbone `BARModel` only
BACKBONE_SKIPS: dict[str, str] = {
    **UPSTREAM_SKIPS,
    "test_training": "BARModel is the backbone and returns no loss; training runs on BARForCausalImageModeling",
    "test_training_gradient_checkpointing": "no loss on the backbone; checked on BARForCausalImageModeling",
    "test_training_gradient_checkpointing_use_reentrant_false": "no loss on the backbone; checked on "
    "BARForCausalImageModeling",
    "test_training_gradient_checkpointing_use_reentrant_true": "no loss on the backbone; checked on "
    "BARForCausalImageModeling",
}


class BARModelTester:
    """Tiny BAR (2 layers, 4×4 grid of 2-bit tokens, 3 prefix slots); inputs = bits, labels and MBM noise."""

    # 7: upstream's eager-vs-SDPA test pads smaller batches to 7 rows with ids up to 4, which are not bits
    def __init__(self, parent, batch_size=7, is_training=True):
        self.parent = parent
        self.batch_size = batch_size
        self.is_training = is_training
        self.hidden_size = 32
        self.num_hidden_layers = 2
        self.num_attention_heads = 2
        self.num_class_tokens = 2
        self.latent_size = 4
        self.num_bits = 2
        self.num_classes = 10
        self.num_ar_steps = self.latent_size**2
        self.seq_length = 1 + self.num_class_tokens + self.num_ar_steps  # cls + class tokens + N bit tokens

    def get_config(self) -> BARConfig:
        return BARConfig(
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=37,
            latent_height=self.latent_size,
            latent_width=self.latent_size,
            num_bits=self.num_bits,
            num_classes=self.num_classes,
            num_class_tokens=self.num_class_tokens,
            head_hidden_size=24,
            head_num_layers=1,
            head_intermediate_size=29,
            head_fourier_size=8,
        )

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        device = modeling_common.torch_device
        batch, n, k = self.batch_size, self.num_ar_steps, self.num_bits
        inputs = {
            "bits": torch.randint(0, 2, (batch, n, k), device=device),
            "class_labels": torch.randint(0, self.num_classes + 1, (batch,), device=device),
            "mask_ratio_noise": torch.randn(batch, n, device=device),
            "mask_noise": torch.rand(batch, n, k, device=device),
        }
        return config, inputs


class _BARModelTesterForBackbone(BARModelTester):
    """`BARModel` takes bits + labels only (no head, no MBM noise)."""

    def prepare_config_and_inputs_for_common(self):
        config, inputs = super().prepare_config_and_inputs_for_common()
        return config, {"bits": inputs["bits"], "class_labels": inputs["class_labels"]}


_ORIGINAL_INIT_WEIGHTS = BARPreTrainedModel._init_weights


@torch.no_grad()
def _init_weights_with_open_gates(self, module: nn.Module) -> None:
    """BAR's init, except that the AdaLN-zero projections are drawn N(0, 0.02) instead of 0.

    With zero gates a fresh model's outputs do not depend on attention (every block is the identity) nor on the
    backbone (the head ignores its conditions), which would make the upstream eager-vs-SDPA, batching, gradient and
    `enable_input_require_grads` checks compare quantities that the code under test does not influence.
    """
    _ORIGINAL_INIT_WEIGHTS(self, module)
    if isinstance(module, nn.Linear) and getattr(module, "_zero_init", False):
        init.normal_(module.weight, std=self.config.initializer_range)


class _OpenGates:
    def setUp(self):
        super().setUp()
        patcher = unittest.mock.patch.object(BARPreTrainedModel, "_init_weights", _init_weights_with_open_gates)
        patcher.start()
        self.addCleanup(patcher.stop)


class BARForCausalImageModelingTest(_OpenGates, ModelTesterMixin, unittest.TestCase):
    all_model_classes = (BARForCausalImageModeling,)
    additional_model_inputs = ["class_labels", "mask_ratio_noise", "mask_noise"]
    test_resize_embeddings = False  # the bit vocabulary {0, 1, mask} is fixed

    def setUp(self):
        super().setUp()
        self.model_tester = BARModelTester(self)
        self.config_tester = ConfigTester(
            self,
            config_class=BARConfig,
            has_text_modality=False,
            hidden_size=32,
            num_attention_heads=2,
            num_hidden_layers=2,
        )

    def test_config(self):
        self.config_tester.run_common_tests()


class BARModelTest(_OpenGates, ModelTesterMixin, unittest.TestCase):
    all_model_classes = (BARModel,)
    additional_model_inputs = ["class_labels"]
    test_resize_embeddings = False  # the bit vocabulary {0, 1, mask} is fixed

    def setUp(self):
        super().setUp()
        self.model_tester = _BARModelTesterForBackbone(self)


def _apply_skips(cls, skips: dict[str, str]) -> None:
    for name, reason in skips.items():
        setattr(cls, name, unittest.skip(reason)(getattr(ModelTesterMixin, name)))


_apply_skips(BARForCausalImageModelingTest, UPSTREAM_SKIPS)
_apply_skips(BARModelTest, BACKBONE_SKIPS)


def test_every_skip_names_an_upstream_test():
    missing = [name for name in BACKBONE_SKIPS if not hasattr(ModelTesterMixin, name)]
    assert not missing, f"stale skips (no such upstream test): {missing}"
