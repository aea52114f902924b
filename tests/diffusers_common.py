"""bar_hf's own equivalents of diffusers' generic test mixins (their sdist ships none of them).

Each mixin lists, per test, which diffusers check it stands for (`PipelineTesterMixin` in
`tests/pipelines/test_pipelines_common.py`, `ModelTesterMixin` in `tests/models/test_modeling_common.py`,
`SchedulerCommonTest` in `tests/schedulers/test_schedulers.py`). A test class mixes one in and provides the
tiny components; `tests/test_diffusers_conformance.py` runs them for `BARPipeline`, `BARVQModel` and the bit
schedulers. Checks that do not apply to BAR are listed in `NOT_APPLICABLE` with the reason.
"""

from __future__ import annotations

import inspect
import json
import os
import re

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.hooks._common import _GO_LC_SUPPORTED_PYTORCH_LAYERS
from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME

#: diffusers checks with no BAR counterpart, and why (kept here so the reasons are reviewed with the tests).
NOT_APPLICABLE = {
    "test_attention_slicing_forward_pass / test_xformers_attention_forwardGenerator_pass / attn processors": (
        "BAR calls torch SDPA directly (processor-free); checked instead that no attention processors exist"
    ),
    "test_encode_prompt_works_in_isolation / prompt embeds": "class-conditional: no text encoder or prompt",
    "test_sequential_cpu_offload_forward_pass": (
        "needs an accelerator: with execution device 'cpu' accelerate's tied-parameter map hands plain tensors back "
        "(TypeError in set_module_tensor_to_device); model CPU offload and group offloading are tested on CPU"
    ),
    "ModelTesterMixin.test_auto_model (standalone model folder)": (
        "diffusers' AutoModel maps a bare config.json `_class_name` to the diffusers library only; it resolves bar_hf "
        "models from a pipeline folder's model_index.json (tested in test_pipeline_bar.py::test_save_load_round_trip)"
    ),
    "test_save_load_dduf": "not covered: DDUF export of a pipeline with a transformers component is not tested",
    "test_float16_inference / test_save_load_float16 (fp16 math)": "CPU-only CI; fp16 storage is tested with "
    "`from_pretrained(torch_dtype=float16)` and layerwise casting",
    "scheduler init_noise_sigma / scale_model_input": "the model input is discrete bit states; nothing to scale",
    "scheduler trained_betas / beta schedules / prediction_type": "no noise schedule: bits are revealed, not denoised",
}


def _to_numpy(output) -> np.ndarray:
    if isinstance(output, torch.Tensor):
        return output.detach().float().cpu().numpy()
    if isinstance(output, list):  # PIL images
        return np.stack([np.asarray(image, dtype=np.float32) / 255 for image in output])
    return np.asarray(output, dtype=np.float32)


# ---------------------------------------------------------------------------------------------------- pipelines
class PipelineTesterMixin:
    """Generic `DiffusionPipeline` checks. Subclasses set `pipeline_class`, `batch_arg` (the per-item input, e.g.
    `class_labels`), `images_per_item_arg` (`num_images_per_label`) and implement `get_dummy_components()` and
    `get_dummy_inputs(seed)` (must include `generator` as a list and `output_type`)."""

    pipeline_class: type[DiffusionPipeline]
    batch_arg: str
    images_per_item_arg: str
    required_call_params = (
        "generator",
        "output_type",
        "return_dict",
        "callback_on_step_end",
        "callback_on_step_end_tensor_inputs",
    )
    #: constructor config entries (not modules) with a non-default value to round-trip through save/load
    config_overrides: dict = {}

    def get_dummy_components(self) -> dict:
        raise NotImplementedError

    def get_dummy_inputs(self, seed: int = 0, batch: int = 2) -> dict:
        raise NotImplementedError

    def make_pipe(self, **overrides):
        pipe = self.pipeline_class(**{**self.get_dummy_components(), **overrides})
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def run(self, pipe, **overrides):
        return pipe(**{**self.get_dummy_inputs(), **overrides})[0]

    # ---- structure
    def test_components_function(self):  # diffusers: test_components_function
        components = self.get_dummy_components()
        pipe = self.pipeline_class(**components)
        modules = {k: v for k, v in components.items() if not isinstance(v, (dict, str, int, float, type(None)))}
        assert set(pipe.components) == set(modules)
        assert all(pipe.components[name] is module for name, module in modules.items())

    def test_call_signature(self):  # diffusers: test_pipeline_call_signature
        params = inspect.signature(self.pipeline_class.__call__).parameters
        missing = [name for name in (*self.required_call_params, self.batch_arg, self.images_per_item_arg)]
        assert [name for name in missing if name not in params] == []
        assert isinstance(self.pipeline_class._callback_tensor_inputs, list)
        assert self.pipeline_class._optional_components is not None

    def test_no_attention_processors(self):  # diffusers: attention processor tests (see NOT_APPLICABLE)
        pipe = self.make_pipe()
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                assert getattr(component, "attn_processors", {}) == {}
                assert not [name for name, module in component.named_modules() if hasattr(module, "set_processor")]

    # ---- outputs
    def test_dict_tuple_outputs_equivalent(self):  # diffusers: test_dict_tuple_outputs_equivalent
        pipe = self.make_pipe()
        as_dict = pipe(**self.get_dummy_inputs())
        as_tuple = pipe(**self.get_dummy_inputs(), return_dict=False)
        assert isinstance(as_tuple, tuple) and len(as_tuple) == 1
        np.testing.assert_array_equal(_to_numpy(as_dict.images), _to_numpy(as_tuple[0]))

    def test_determinism(self):  # diffusers: test_inference (same seed, same output)
        pipe = self.make_pipe()
        np.testing.assert_array_equal(_to_numpy(self.run(pipe)), _to_numpy(self.run(pipe)))
        assert not np.array_equal(_to_numpy(self.run(pipe)), _to_numpy(pipe(**self.get_dummy_inputs(seed=50))[0]))

    def test_inference_batch_consistent(self):  # diffusers: test_inference_batch_consistent
        pipe = self.make_pipe()
        for batch in (1, 3):
            out = pipe(**self.get_dummy_inputs(batch=batch))[0]
            assert len(out) == batch

    def test_inference_batch_single_identical(self):  # diffusers: test_inference_batch_single_identical
        pipe = self.make_pipe()
        inputs = self.get_dummy_inputs(batch=3)
        batched = _to_numpy(pipe(**inputs)[0])
        for index in range(3):
            single = self.get_dummy_inputs(batch=3)
            single[self.batch_arg] = [single[self.batch_arg][index]]
            single["generator"] = [single["generator"][index]]
            np.testing.assert_allclose(_to_numpy(pipe(**single)[0])[0], batched[index], atol=1e-6)

    def test_num_images_per_item(self):  # diffusers: test_num_images_per_prompt
        pipe = self.make_pipe()
        for per_item in (1, 3):
            inputs = self.get_dummy_inputs(batch=2)
            inputs["generator"] = self.get_dummy_inputs(batch=2 * per_item)["generator"]
            out = pipe(**inputs, **{self.images_per_item_arg: per_item})[0]
            assert len(out) == 2 * per_item

    def test_output_types(self):  # diffusers: output_type handling in test_inference / test_to_np
        pipe = self.make_pipe()
        pt = self.run(pipe, output_type="pt")
        np_out = self.run(pipe, output_type="np")
        pil = self.run(pipe, output_type="pil")
        assert pt.dim() == 4 and np_out.shape == tuple(pt.permute(0, 2, 3, 1).shape)
        assert 0 <= np_out.min() and np_out.max() <= 1 and np.isfinite(np_out).all()
        np.testing.assert_allclose(pt.permute(0, 2, 3, 1).numpy(), np_out, atol=1e-6)
        assert len(pil) == len(np_out) and pil[0].size == (np_out.shape[2], np_out.shape[1])

    # ---- save / load
    def test_save_load_local(self, tmp_path):  # diffusers: test_save_load_local
        pipe = self.make_pipe(**self.config_overrides)
        reference = _to_numpy(self.run(pipe))
        pipe.save_pretrained(tmp_path)
        for name in pipe.components:
            assert (tmp_path / name).is_dir(), name
        loaded = self.pipeline_class.from_pretrained(tmp_path)
        loaded.set_progress_bar_config(disable=True)
        np.testing.assert_array_equal(_to_numpy(self.run(loaded)), reference)
        for key in self.config_overrides:
            assert loaded.config[key] == pipe.config[key], key
        saved = json.loads((tmp_path / "model_index.json").read_text())
        assert saved["_class_name"] == self.pipeline_class.__name__

    def test_save_load_optional_components(self, tmp_path):  # diffusers: test_save_load_optional_components
        pipe = self.make_pipe()  # optional config entries left at their defaults (e.g. id2label=None)
        for name in pipe._optional_components:
            setattr(pipe, name, None)
        reference = _to_numpy(self.run(pipe))
        pipe.save_pretrained(tmp_path)
        loaded = self.pipeline_class.from_pretrained(tmp_path)
        loaded.set_progress_bar_config(disable=True)
        for name in pipe._optional_components:
            assert getattr(loaded, name) is None, name
        public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
        assert public(loaded.config) == public(pipe.config)
        np.testing.assert_array_equal(_to_numpy(self.run(loaded)), reference)

    def test_serialization_with_variants(self, tmp_path):  # diffusers: test_serialization_with_variants
        pipe = self.make_pipe()
        pipe.save_pretrained(tmp_path, variant="fp16")
        models = [n for n, c in pipe.components.items() if isinstance(c, torch.nn.Module)]
        for name in models:
            files = os.listdir(tmp_path / name)
            assert any(".fp16." in f and f.endswith(".safetensors") for f in files), (name, files)
            assert not any(f.endswith((".bin", ".pt", ".pth")) for f in files), (name, files)
        loaded = self.pipeline_class.from_pretrained(tmp_path, variant="fp16")  # test_loading_with_variants
        loaded.set_progress_bar_config(disable=True)
        np.testing.assert_array_equal(_to_numpy(self.run(loaded)), _to_numpy(self.run(pipe)))
        with pytest.raises((ValueError, OSError)):  # test_loading_with_incorrect_variants_raises_error
            self.pipeline_class.from_pretrained(tmp_path)

    def test_save_load_low_precision(self, tmp_path):  # diffusers: test_save_load_float16 (bf16 on CPU)
        self.make_pipe().save_pretrained(tmp_path)
        loaded = self.pipeline_class.from_pretrained(tmp_path, dtype=torch.bfloat16)
        loaded.set_progress_bar_config(disable=True)
        for name, component in loaded.components.items():
            if isinstance(component, torch.nn.Module):
                keep = tuple(getattr(component, "_keep_in_fp32_modules", None) or ())
                for param_name, param in component.named_parameters():
                    fp32 = any(part in keep for part in param_name.split("."))
                    assert param.dtype == (torch.float32 if fp32 else torch.bfloat16), (name, param_name)
        # the diffusers recipe: load in the compute dtype, then store the weights in float8
        loaded.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
        out = _to_numpy(self.run(loaded, output_type="np"))
        assert np.isfinite(out).all() and 0 <= out.min() and out.max() <= 1

    def test_from_pipe(self):  # diffusers: test_from_pipe_consistent_config / components shared
        pipe = self.make_pipe(**self.config_overrides)
        reference = _to_numpy(self.run(pipe))
        new = self.pipeline_class.from_pipe(pipe)
        new.set_progress_bar_config(disable=True)
        assert all(new.components[name] is module for name, module in pipe.components.items())
        public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
        assert public(new.config) == public(pipe.config)
        np.testing.assert_array_equal(_to_numpy(self.run(new)), reference)

    # ---- callbacks
    def test_callback_inputs(self):  # diffusers: test_callback_inputs
        pipe = self.make_pipe()
        allowed = pipe._callback_tensor_inputs
        seen = []

        def everything(p, i, t, kwargs):
            assert set(kwargs) == set(allowed)
            seen.append(i)
            return kwargs

        self.run(pipe, callback_on_step_end=everything, callback_on_step_end_tensor_inputs=allowed)
        assert seen == list(range(pipe.num_timesteps))

        def subset(p, i, t, kwargs):
            assert set(kwargs) == {allowed[0]}
            return kwargs

        self.run(pipe, callback_on_step_end=subset, callback_on_step_end_tensor_inputs=allowed[:1])
        with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
            self.run(pipe, callback_on_step_end=subset, callback_on_step_end_tensor_inputs=["not_a_tensor"])

    def test_callback_returning_inputs_changes_nothing(self):  # diffusers: callback round trip is neutral
        pipe = self.make_pipe()
        reference = _to_numpy(self.run(pipe))
        same = self.run(
            pipe,
            callback_on_step_end=lambda p, i, t, kwargs: kwargs,
            callback_on_step_end_tensor_inputs=pipe._callback_tensor_inputs,
        )
        np.testing.assert_array_equal(_to_numpy(same), reference)

    # ---- devices, dtypes, hooks
    def test_to_device(self):  # diffusers: test_to_device
        pipe = self.make_pipe().to("cpu")
        devices = {c.device.type for c in pipe.components.values() if isinstance(c, torch.nn.Module)}
        assert devices == {"cpu"} and pipe.device.type == "cpu"
        assert np.isfinite(_to_numpy(self.run(pipe))).all()

    def test_to_dtype(self):  # diffusers: test_to_dtype
        pipe = self.make_pipe()
        models = [c for c in pipe.components.values() if isinstance(c, torch.nn.Module)]
        assert {m.dtype for m in models} == {torch.float32}
        pipe.to(dtype=torch.bfloat16)
        assert {m.dtype for m in models} == {torch.bfloat16} and pipe.dtype == torch.bfloat16
        out = _to_numpy(self.run(pipe, output_type="np"))
        assert np.isfinite(out).all() and 0 <= out.min() and out.max() <= 1

    def test_model_cpu_offload_forward_pass(self):  # diffusers: test_model_cpu_offload_forward_pass
        # accelerate's CpuOffload hooks work with execution device "cpu" too: hooks are installed, the output is
        # unchanged, and `remove_all_hooks` removes them (diffusers' test uses an accelerator device)
        pipe = self.make_pipe()
        reference = _to_numpy(self.run(pipe))
        pipe.enable_model_cpu_offload(device="cpu")
        order = [name for name in pipe.model_cpu_offload_seq.split("->")]
        for name in order:
            hook = getattr(pipe.components[name], "_hf_hook", None)
            assert type(hook).__name__ == "CpuOffload", (name, hook)
        assert pipe._execution_device.type == "cpu"
        np.testing.assert_array_equal(_to_numpy(self.run(pipe)), reference)
        np.testing.assert_array_equal(_to_numpy(self.run(pipe)), reference)  # test_cpu_offload_forward_pass_twice
        pipe.remove_all_hooks()
        assert all(getattr(pipe.components[name], "_hf_hook", None) is None for name in order)
        np.testing.assert_array_equal(_to_numpy(self.run(pipe)), reference)

    def test_layerwise_casting_inference(self):  # diffusers: PipelineTesterMixin.test_layerwise_casting_inference
        pipe = self.make_pipe()
        pipe.to("cpu", dtype=torch.bfloat16)
        denoiser = pipe.transformer if hasattr(pipe, "transformer") else pipe.unet  # as diffusers' own test
        denoiser.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
        assert torch.float8_e4m3fn in {p.dtype for p in denoiser.parameters()}
        out = _to_numpy(self.run(pipe, output_type="np"))
        assert np.isfinite(out).all() and 0 <= out.min() and out.max() <= 1

    def test_pipeline_layerwise_casting_inference(self):  # both models at once, through the pipeline
        pipe = self.make_pipe()
        pipe.to(torch.bfloat16)
        pipe.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                assert torch.float8_e4m3fn in {p.dtype for p in component.parameters()}
        out = _to_numpy(self.run(pipe, output_type="np"))
        assert np.isfinite(out).all() and 0 <= out.min() and out.max() <= 1

    def test_group_offloading_inference(self):  # diffusers: test_group_offloading_inference (onload = CPU)
        pipe = self.make_pipe()
        reference = _to_numpy(self.run(pipe))
        for kwargs in ({"offload_type": "block_level", "num_blocks_per_group": 1}, {"offload_type": "leaf_level"}):
            pipe = self.make_pipe()
            pipe.enable_group_offload(onload_device=torch.device("cpu"), offload_device=torch.device("cpu"), **kwargs)
            np.testing.assert_array_equal(_to_numpy(self.run(pipe)), reference)

    def test_callback_objects(self):  # diffusers: test_callback_cfg / PipelineCallback & MultiPipelineCallbacks
        pipe = self.make_pipe()
        calls = []

        class Recorder(PipelineCallback):
            tensor_inputs = pipe._callback_tensor_inputs[:1]

            def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
                calls.append((step_index, sorted(callback_kwargs)))
                return callback_kwargs

        reference = _to_numpy(self.run(pipe))
        out = self.run(pipe, callback_on_step_end=MultiPipelineCallbacks([Recorder(), Recorder()]))
        np.testing.assert_array_equal(_to_numpy(out), reference)
        steps = pipe.num_timesteps
        assert len(calls) == 2 * steps and calls[0] == (0, sorted(pipe._callback_tensor_inputs[:1]))

    def test_progress_bar(self, capsys):  # diffusers: test_progress_bar
        pipe = self.pipeline_class(**self.get_dummy_components())
        self.run(pipe)
        err = capsys.readouterr().err
        steps = pipe.num_timesteps
        assert f"{steps}/{steps}" in err, err[-300:]
        pipe.set_progress_bar_config(disable=True)
        self.run(pipe)
        assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------------------------- models
class ModelTesterMixin:
    """Generic diffusers `ModelMixin` checks. Subclasses set `model_class` and implement `get_init_dict()` and
    `get_inputs()` (keyword inputs of `forward`); `output_shape` is the expected `sample` shape."""

    model_class: type
    output_shape: tuple[int, ...]

    def get_init_dict(self) -> dict:
        raise NotImplementedError

    def get_inputs(self) -> dict:
        raise NotImplementedError

    def make_model(self):
        torch.manual_seed(0)
        return self.model_class(**self.get_init_dict()).eval()

    def forward(self, model, **kwargs):
        inputs = {k: v.to(model.dtype) if v.is_floating_point() else v for k, v in self.get_inputs().items()}
        with torch.no_grad():
            return model(**inputs, **kwargs)

    def test_output(self):  # diffusers: test_output
        out = self.forward(self.make_model()).sample
        assert tuple(out.shape) == self.output_shape and torch.isfinite(out).all()

    def test_determinism(self):  # diffusers: test_determinism
        model = self.make_model()
        assert torch.equal(self.forward(model).sample, self.forward(model).sample)

    def test_outputs_equivalence(self):  # diffusers: test_outputs_equivalence
        model = self.make_model()
        as_dict, as_tuple = self.forward(model), self.forward(model, return_dict=False)
        assert isinstance(as_tuple, tuple) and torch.equal(as_dict.sample, as_tuple[0])

    def test_from_save_pretrained(self, tmp_path):  # diffusers: test_from_save_pretrained
        model = self.make_model()
        model.save_pretrained(tmp_path)
        assert (tmp_path / SAFETENSORS_WEIGHTS_NAME).is_file() and (tmp_path / "config.json").is_file()
        for low_cpu_mem_usage in (True, False):  # test_from_save_pretrained(low_cpu_mem_usage)
            if not low_cpu_mem_usage and self.model_class._keep_in_fp32_modules:
                with pytest.raises(ValueError, match="low_cpu_mem_usage"):  # diffusers' rule for fp32-kept modules
                    self.model_class.from_pretrained(tmp_path, low_cpu_mem_usage=False)
                continue
            loaded = self.model_class.from_pretrained(tmp_path, low_cpu_mem_usage=low_cpu_mem_usage).eval()
            assert torch.equal(self.forward(loaded).sample, self.forward(model).sample)
            public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
            assert public(loaded.config) == public(model.config)

    def test_from_save_pretrained_variant(self, tmp_path):  # diffusers: test_from_save_pretrained_variant
        model = self.make_model()
        model.save_pretrained(tmp_path, variant="fp16")
        assert (tmp_path / SAFETENSORS_WEIGHTS_NAME.replace(".safetensors", ".fp16.safetensors")).is_file()
        loaded = self.model_class.from_pretrained(tmp_path, variant="fp16").eval()
        assert torch.equal(self.forward(loaded).sample, self.forward(model).sample)
        with pytest.raises(OSError):
            self.model_class.from_pretrained(tmp_path)

    def test_from_save_pretrained_dtype(self, tmp_path):  # diffusers: test_from_save_pretrained_dtype
        model = self.make_model()
        model.save_pretrained(tmp_path)
        keep = tuple(self.model_class._keep_in_fp32_modules or ())
        for dtype in (torch.bfloat16, torch.float16):
            loaded = self.model_class.from_pretrained(tmp_path, torch_dtype=dtype)
            assert loaded.dtype == dtype  # test_keep_in_fp32_modules: those stay float32
            for name, param in loaded.named_parameters():
                expected = torch.float32 if any(part in keep for part in name.split(".")) else dtype
                assert param.dtype == expected, (name, param.dtype)
        loaded = self.model_class.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
        out = self.forward(loaded).sample
        assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()

    def test_num_parameters(self):  # diffusers: ModelMixin.num_parameters
        model = self.make_model()
        total = sum(p.numel() for p in model.parameters())
        assert model.num_parameters() == total
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert model.num_parameters(only_trainable=True) == trainable
        embeddings = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
        assert model.num_parameters(exclude_embeddings=True) == total - embeddings

    def test_sharded_checkpoints(self, tmp_path):  # diffusers: test_sharded_checkpoints(_with_variant)
        model = self.make_model()
        size_kb = sum(p.numel() * p.element_size() for p in model.parameters()) // 1024
        model.save_pretrained(tmp_path, max_shard_size=f"{max(size_kb // 4, 1)}KB", variant="fp16")
        shards = [f for f in os.listdir(tmp_path) if f.endswith(".safetensors")]
        assert len(shards) > 1 and all(".fp16-" in f for f in shards), shards
        assert (tmp_path / "diffusion_pytorch_model.safetensors.index.fp16.json").is_file()
        loaded = self.model_class.from_pretrained(tmp_path, variant="fp16").eval()
        assert torch.equal(self.forward(loaded).sample, self.forward(model).sample)

    def test_group_offloading(self):  # diffusers: test_group_offloading (onload device = CPU)
        reference = self.forward(self.make_model()).sample
        for kwargs in ({"offload_type": "block_level", "num_blocks_per_group": 1}, {"offload_type": "leaf_level"}):
            model = self.make_model()
            model.enable_group_offload(torch.device("cpu"), offload_device=torch.device("cpu"), **kwargs)
            hooks = [m for m in model.modules() if hasattr(m, "_diffusers_hook")]
            assert hooks and all(m._diffusers_hook.get_hook("group_offloading") is not None for m in hooks)
            assert torch.allclose(self.forward(model).sample, reference, atol=1e-6)

    def test_no_attention_processors(self):  # diffusers: attention processor tests (see NOT_APPLICABLE)
        model = self.make_model()  # processor-free: no diffusers `Attention` module (nothing to set a processor on)
        assert getattr(model, "attn_processors", {}) == {}
        assert not [name for name, module in model.named_modules() if hasattr(module, "set_processor")]

    def test_gradient_checkpointing(self):  # diffusers: test_enable/disable + test_effective_gradient_checkpointing
        model = self.make_model()
        if not model._supports_gradient_checkpointing:
            pytest.skip(f"{self.model_class.__name__} does not support gradient checkpointing")
        grads = []
        for enabled in (False, True):
            model.train()
            if enabled:
                model.enable_gradient_checkpointing()
                assert model.is_gradient_checkpointing
            model.zero_grad()
            self.forward_train(model).sample.float().pow(2).mean().backward()
            grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        model.disable_gradient_checkpointing()
        assert not model.is_gradient_checkpointing
        assert grads[0].keys() == grads[1].keys() and grads[0]
        for name in grads[0]:
            assert torch.allclose(grads[0][name], grads[1][name], atol=1e-5), name

    def forward_train(self, model):
        return model(**self.get_inputs())

    #: (storage, compute) dtype pairs of diffusers' layerwise-casting tests
    layerwise_dtypes = [
        (torch.float16, torch.float32),
        (torch.float8_e4m3fn, torch.float32),
        (torch.float8_e5m2, torch.float32),
        (torch.float8_e4m3fn, torch.bfloat16),
    ]

    def check_layer_dtypes(self, model, storage_dtype, compute_dtype):
        """Every Linear/Conv/Embedding rests in `storage_dtype`, except those matching a skip pattern."""
        patterns = DEFAULT_SKIP_MODULES_PATTERN + tuple(model._skip_layerwise_casting_patterns or ())
        patterns += tuple(model._keep_in_fp32_modules or ())
        stored = 0
        for name, module in model.named_modules():
            if not isinstance(module, _GO_LC_SUPPORTED_PYTORCH_LAYERS):
                continue
            skipped = any(re.search(pattern, name) for pattern in patterns)
            expected = (torch.float32 if module.weight.dtype == torch.float32 else compute_dtype) if skipped else None
            for param in (module.weight, getattr(module, "bias", None)):
                if param is not None:
                    assert param.dtype == (expected or storage_dtype), (name, param.dtype)
            stored += not skipped
        assert stored > 0

    def test_layerwise_casting_inference(self):  # diffusers: test_layerwise_casting_inference / _memory
        reference = self.forward(self.make_model()).sample.float()
        for storage_dtype, compute_dtype in self.layerwise_dtypes:
            model = self.make_model().to(compute_dtype)
            footprint = model.get_memory_footprint()
            model.enable_layerwise_casting(storage_dtype=storage_dtype, compute_dtype=compute_dtype)
            self.check_layer_dtypes(model, storage_dtype, compute_dtype)
            assert model.get_memory_footprint() < footprint  # test_layerwise_casting_memory (footprint part)
            assert model.dtype == compute_dtype
            out = self.forward(model).sample.float()
            assert torch.isfinite(out).all() and out.shape == reference.shape
            # diffusers only asserts cosine distance < 1; BAR asserts closeness to float32
            error = ((out - reference).abs().mean() / reference.abs().mean()).item()
            assert error < 0.1, (storage_dtype, compute_dtype, error)

    def test_layerwise_casting_training(self):  # diffusers: test_layerwise_casting_training
        # bf16 compute is skipped on CPU, as diffusers does ("CPU doesn't go well with bfloat16")
        for storage_dtype, compute_dtype in self.layerwise_dtypes[:3]:
            model = self.make_model().to(compute_dtype)
            model.enable_layerwise_casting(storage_dtype=storage_dtype, compute_dtype=compute_dtype)
            model.train()
            with torch.amp.autocast(device_type="cpu"):
                out = self.forward_train(model).sample
                loss = torch.nn.functional.mse_loss(out, torch.zeros_like(out))
            loss.backward()
            grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
            assert grads and all(torch.isfinite(g.float()).all() for g in grads)


# ---------------------------------------------------------------------------------------------------- schedulers
class SchedulerCommonTest:
    """Generic diffusers scheduler checks. Subclasses set `scheduler_class`, `compatible_classes` and implement
    `get_config()`, `dummy_model_output(batch, generator)` and `dummy_sample(batch)`."""

    scheduler_class: type
    compatible_classes: list[type]

    def get_config(self, **overrides) -> dict:
        raise NotImplementedError

    def make(self, **overrides):
        return self.scheduler_class(**self.get_config(**overrides))

    def step_once(self, scheduler, seed=0, batch=3, timestep=None):
        logits = self.dummy_model_output(batch, torch.Generator().manual_seed(seed))
        timestep = scheduler.timesteps[0] if timestep is None else timestep
        return scheduler.step(logits, timestep, self.dummy_sample(batch), generator=torch.Generator().manual_seed(1))

    def test_public_api(self):  # diffusers: test_scheduler_public_api
        scheduler = self.make()
        for name in ("set_timesteps", "step", "add_noise", "save_pretrained", "from_pretrained", "from_config"):
            assert callable(getattr(scheduler, name)), name
        assert scheduler.config_name == "scheduler_config.json" and scheduler.order == 1
        assert isinstance(scheduler.timesteps, torch.Tensor)

    def test_from_save_pretrained(self, tmp_path):  # diffusers: test_from_save_pretrained / check_over_configs
        scheduler = self.make()
        scheduler.save_config(tmp_path)
        loaded = self.scheduler_class.from_pretrained(tmp_path)
        public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
        assert public(loaded.config) == public(scheduler.config)
        for t in scheduler.timesteps:
            a, b = self.step_once(scheduler, timestep=t), self.step_once(loaded, timestep=t)
            assert torch.equal(a.prev_sample, b.prev_sample) and torch.equal(
                a.pred_original_sample, b.pred_original_sample
            )

    def test_from_config_swaps(self):  # diffusers: test_compatibles / test_from_pretrained (swap)
        scheduler = self.make()
        assert {c.__name__ for c in self.compatible_classes} <= {c.__name__ for c in scheduler.compatibles}
        for other_class in self.compatible_classes:
            other = other_class.from_config(scheduler.config)
            assert type(other) is other_class
            back = self.scheduler_class.from_config(other.config)
            for key, value in scheduler.config.items():
                if not key.startswith("_"):
                    assert back.config[key] == value, key

    def test_step_shape_and_values(self):  # diffusers: test_step_shape
        scheduler = self.make()
        batch = 3
        sample = self.dummy_sample(batch)
        for t in scheduler.timesteps:
            out = self.step_once(scheduler, timestep=t, batch=batch)
            assert out.prev_sample.shape == sample.shape and out.prev_sample.dtype == torch.long
            assert out.pred_original_sample.shape == sample.shape
            assert set(out.prev_sample.unique().tolist()) <= {0, 1, 2}
            assert set(out.pred_original_sample.unique().tolist()) <= {0, 1}

    def test_outputs_equivalence(self):  # diffusers: test_scheduler_outputs_equivalence
        scheduler = self.make()
        logits = self.dummy_model_output(3, torch.Generator().manual_seed(0))
        t = scheduler.timesteps[0]
        as_dict = scheduler.step(logits, t, self.dummy_sample(3), generator=torch.Generator().manual_seed(1))
        as_tuple = scheduler.step(
            logits, t, self.dummy_sample(3), generator=torch.Generator().manual_seed(1), return_dict=False
        )
        assert torch.equal(as_dict.prev_sample, as_tuple[0])
        assert torch.equal(as_dict.pred_original_sample, as_tuple[1])

    def test_set_timesteps(self):  # diffusers: check_over_forward(num_inference_steps) / test_timesteps
        scheduler = self.make()
        k = scheduler.config.bits_per_token
        for steps in range(1, k + 1):
            scheduler.set_timesteps(num_inference_steps=steps)
            assert len(scheduler.timesteps) == steps == scheduler.num_inference_steps
            assert sum(scheduler.tokens_allocation) == k
        with pytest.raises(ValueError, match="num_inference_steps"):
            scheduler.set_timesteps(num_inference_steps=k + 1)

    def test_full_loop_reveals_every_bit(self):  # diffusers: test_full_loop_no_noise
        scheduler = self.make()
        sample = self.dummy_sample(4)
        gen = torch.Generator().manual_seed(0)
        for t in scheduler.timesteps:
            logits = self.dummy_model_output(4, gen)
            sample = scheduler.step(logits, t, sample, generator=gen).prev_sample
        assert set(sample.unique().tolist()) <= {0, 1}

    def test_step_determinism_and_batch_invariance(self):  # diffusers: generator handling in step tests
        scheduler = self.make()
        a, b = self.step_once(scheduler, seed=3), self.step_once(scheduler, seed=3)
        assert torch.equal(a.prev_sample, b.prev_sample)
        logits = self.dummy_model_output(3, torch.Generator().manual_seed(0))
        t = scheduler.timesteps[0]
        gens = [torch.Generator().manual_seed(i) for i in range(3)]
        batched = scheduler.step(logits, t, self.dummy_sample(3), generator=gens).prev_sample
        single = scheduler.step(logits[1:2], t, self.dummy_sample(1), generator=[torch.Generator().manual_seed(1)])
        assert torch.equal(single.prev_sample[0], batched[1])

    def test_add_noise(self):  # diffusers: test_add_noise_device / add_noise shape
        scheduler = self.make()
        k = scheduler.config.bits_per_token
        clean = torch.randint(0, 2, (5, k), generator=torch.Generator().manual_seed(0))
        ratio = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
        noisy = scheduler.add_noise(clean, ratio, generator=torch.Generator().manual_seed(1))
        again = scheduler.add_noise(clean, ratio, generator=torch.Generator().manual_seed(1))
        assert noisy.shape == clean.shape and noisy.dtype == clean.dtype and torch.equal(noisy, again)
        masked = noisy == 2
        assert torch.equal(noisy[~masked], clean[~masked])
        expected = torch.round(k * ratio).clamp(min=1)
        assert torch.equal(masked.sum(-1).float(), expected)

    def test_len(self):  # diffusers: len(scheduler) == num_train_timesteps; here the bits per token
        assert len(self.make()) == self.make().config.bits_per_token
