"""`BARInpaintPipeline`: kept tokens are exact, masked tokens are sampled, parity with `BARPipeline`, validation."""

import numpy as np
import pytest
import torch
from PIL import Image
from test_pipeline_bar import gens, get_dummy_components, make_pipe

from bar_hf import BARConfig, BARForCausalImageModeling, BARInpaintPipeline, BARPipeline
from bar_hf.bits import patchify_bits
from bar_hf.masks import kept_first_orders, make_mask, overlap_token_mask, random_token_masks, token_mask
from bar_hf.models.vq_model import FSQ_SHIFT
from bar_hf.pipelines.pipeline_inpaint import default_order
from bar_hf.pipelines.sampling import SamplingState

SIZE, GRID = 24, (6, 6)  # tiny models: 24 px images, a 6x6 token grid, 5 bits per token


def varied_bits(vqvae):
    """Tiny random tokenizers encode everything to all-ones (the FSQ threshold is u >= -3.8): centre the threshold so
    that different images get different bits."""
    with torch.no_grad():
        vqvae.quantize.in_proj.weight.normal_(0, 1.0)
        vqvae.quantize.in_proj.bias.fill_(-FSQ_SHIFT)
    return vqvae


@pytest.fixture(scope="module")
def pipe():
    bar = make_pipe()
    varied_bits(bar.vqvae)
    return bar


@pytest.fixture(scope="module")
def inpaint(pipe):
    edit = BARInpaintPipeline.from_pipe(pipe)
    edit.set_progress_bar_config(disable=True)
    return edit


def images(n, seed=0):
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def three_masks():
    names = ("center", "bottom_half", "outpaint")
    return torch.stack([torch.from_numpy(make_mask(name, SIZE, SIZE)) for name in names])


def encoded(pipe, pixels):
    return pipe.vqvae.encode_to_bits(pixels * 2 - 1)


@pytest.mark.parametrize("order", ["raster", "kept_first"])
def test_kept_tokens_are_exact_and_only_masked_tokens_change(pipe, inpaint, order):
    pixels, masks = images(3), three_masks()  # a different mask per sample in one batch
    out = inpaint(pixels, masks, [1, 3, 0], order=order, generator=gens(3), output_type="latent").images
    source = encoded(pipe, pixels)
    regenerate = token_mask(masks, GRID)
    changed = (out != source).any(-1)
    assert torch.equal(out[~regenerate], source[~regenerate])
    assert not changed[~regenerate].any() and changed[regenerate].float().mean() > 0.5
    assert set(out.unique().tolist()) <= {0, 1}


def test_all_kept_mask_returns_the_encoded_image(pipe, inpaint):
    pixels = images(2, seed=1)
    out = inpaint(pixels, torch.zeros(SIZE, SIZE), [1, 3], generator=gens(2), output_type="latent").images
    assert torch.equal(out, encoded(pipe, pixels))


@pytest.mark.parametrize("order", ["raster", "kept_first"])
def test_all_masked_equals_bar_pipeline(pipe, inpaint, order):
    expected = pipe([1, 3, 1], generator=gens(3, 7), output_type="latent").images
    got = inpaint(images(3), np.ones((SIZE, SIZE)), [1, 3, 1], order=order, generator=gens(3, 7), output_type="latent")
    assert torch.equal(got.images, expected)


@pytest.mark.parametrize("order", ["raster", "kept_first"])
def test_per_image_generators_make_results_batch_invariant(inpaint, order):
    pixels, masks = images(3, seed=2), three_masks()
    batch = inpaint(pixels, masks, [0, 1, 3], order=order, generator=gens(3), output_type="latent").images
    for i in range(3):
        single = inpaint(pixels[i], masks[i], [0, 1, 3][i], order=order, generator=gens(1, i), output_type="latent")
        assert torch.equal(single.images[0], batch[i])


def test_lockstep_kv_cache_agrees_with_full_recompute(pipe):
    transformer, config = pipe.transformer, pipe.transformer.config
    for seed in range(4):  # random masks → random kept-first orders, random common prefixes
        g = torch.Generator().manual_seed(seed)
        regenerate = random_token_masks(5, GRID, generator=g)
        orders = kept_first_orders(regenerate)
        bits = torch.randint(0, 2, (5, config.num_ar_steps, config.bits_per_token), generator=g)
        labels = torch.randint(0, config.num_classes + 1, (5,), generator=g)
        full = transformer.model(bits=bits, class_labels=labels, orders=orders).conditions  # (B, N, W)
        start = int((~regenerate).sum(1).min())  # the prefix every row keeps
        state = SamplingState(transformer, labels, orders)
        steps = [state.prefill(bits[:, :start])]
        steps += [state.step(bits[:, i : i + 1]) for i in range(start, config.num_ar_steps - 1)]
        torch.testing.assert_close(torch.stack(steps, 1), full[:, start:], atol=2e-5, rtol=1e-4)


def test_kept_first_sees_kept_tokens_below(inpaint):
    """With "kept_first" the regenerated top half is conditioned on the kept bottom half (the conditions of its first
    token change with the bottom's bits); with "raster" it cannot be."""
    mask = torch.from_numpy(make_mask("top_half", SIZE, SIZE))
    a, b = images(1, seed=3), images(1, seed=4)
    a[..., : SIZE // 2, :] = b[..., : SIZE // 2, :]  # same top, different bottom
    first = {}

    def record(p, i, t, kwargs):
        first.setdefault(key, kwargs["conditions"].clone())
        return kwargs

    for order in ("raster", "kept_first"):
        for key in ((order, 0), (order, 1)):
            inpaint(
                (a, b)[key[1]], mask, 1, order=order, generator=gens(1), output_type="latent",
                callback_on_step_end=record, callback_on_step_end_tensor_inputs=["conditions"],
            )  # fmt: skip
    torch.testing.assert_close(first["raster", 0], first["raster", 1], rtol=0, atol=0)
    assert (first["kept_first", 0] - first["kept_first", 1]).abs().max() > 1e-3


def test_keep_bits_keeps_the_chosen_bits(pipe, inpaint):
    pixels, masks = images(3, seed=5), three_masks()
    source = encoded(pipe, pixels)
    regenerate = token_mask(masks, GRID)
    out = inpaint(pixels, masks, [1, 3, 0], keep_bits=2, generator=gens(3), output_type="latent").images
    assert torch.equal(out[..., :2], source[..., :2])
    assert (out[regenerate][:, 2:] != source[regenerate][:, 2:]).any()
    chosen = torch.tensor([False, True, False, False, True])
    out = inpaint(pixels, masks, [1, 3, 0], keep_bits=chosen, generator=gens(3), output_type="latent").images
    assert torch.equal(out[..., chosen], source[..., chosen])
    everything = inpaint(pixels, masks, [1, 3, 0], keep_bits=5, generator=gens(3), output_type="latent").images
    assert torch.equal(everything, source)
    unchanged = inpaint(pixels, masks, [1, 3, 0], keep_bits=0, generator=gens(3), output_type="latent").images
    plain = inpaint(pixels, masks, [1, 3, 0], generator=gens(3), output_type="latent").images
    assert torch.equal(unchanged, plain)


@pytest.mark.parametrize("head_type", ["linear", "bitwise"])
def test_keep_bits_with_baseline_heads(head_type):
    components = get_dummy_components()
    config = BARConfig(**{**components["transformer"].config.to_dict(), "head_type": head_type})
    components["transformer"] = BARForCausalImageModeling(config).eval()
    varied_bits(components["vqvae"])
    edit = BARInpaintPipeline(**components)
    edit.set_progress_bar_config(disable=True)
    pixels = images(2, seed=6)
    source = encoded(edit, pixels)
    out = edit(pixels, np.ones((SIZE, SIZE)), [1, 2], keep_bits=3, generator=gens(2), output_type="latent").images
    assert torch.equal(out[..., :3], source[..., :3])


def test_paste_back_copies_kept_cells_exactly(inpaint):
    pixels, masks = images(3, seed=8), three_masks()
    pasted = inpaint(pixels, masks, [1, 3, 0], generator=gens(3), output_type="pt").images
    raw = inpaint(pixels, masks, [1, 3, 0], paste_back=False, generator=gens(3), output_type="pt").images
    kept = inpaint.kept_pixel_mask(token_mask(masks, GRID)).expand_as(pasted)
    assert torch.equal(pasted[kept], pixels[kept])
    assert torch.equal(pasted[~kept], raw[~kept]) and not torch.equal(raw[kept], pixels[kept])


def test_input_types_and_resizing(inpaint):
    pixels = images(1, seed=9)
    mask = make_mask("center", SIZE, SIZE)

    def run(image, mask_image):  # a fresh generator per call
        return inpaint(image, mask_image, class_labels="one", generator=gens(1), output_type="latent").images

    expected = run(pixels, torch.from_numpy(mask))
    array = pixels[0].permute(1, 2, 0).numpy()
    assert torch.equal(run(array, mask > 0.5), expected)  # np image, bool mask
    uint8 = (array * 255).round().astype(np.uint8)
    pil = Image.fromarray(uint8)
    pil_mask = Image.fromarray((mask * 255).astype(np.uint8))
    from_pil = run(pil, pil_mask)
    assert torch.equal(from_pil, run(uint8, mask))
    big = pil.resize((2 * SIZE, 2 * SIZE), Image.NEAREST)  # same aspect ratio: resized to the model's size
    big_mask = make_mask("center", 2 * SIZE, 2 * SIZE)
    resized = run(big, big_mask)
    assert torch.equal(resized, run(big.resize((SIZE, SIZE), Image.BICUBIC), mask))
    assert torch.equal(run(big, pil_mask), resized)  # a mask at the model's size works too
    out = inpaint(pixels, mask, class_labels=1, generator=gens(1)).images
    assert isinstance(out[0], Image.Image) and out[0].size == (SIZE, SIZE)


def test_overlap_token_mask_matches_token_mask_and_handles_any_size():
    masks = three_masks()
    assert torch.equal(overlap_token_mask(masks, GRID), token_mask(masks, GRID))
    odd = torch.zeros(1, 28, 28)
    odd[0, 27, 27] = 1  # last pixel of a 28-px image: only the bottom-right token of a 6x6 grid
    assert overlap_token_mask(odd, GRID).nonzero().tolist() == [[0, 35]]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(image=torch.rand(1, 3, 24, 30)), "`image` is 24x30"),
        (dict(image=torch.rand(1, 3, 24, 24) * 2 - 1), "`image` float values must lie in \\[0, 1\\]"),
        (dict(image="picture.png"), "`image` must be a PIL image"),
        (dict(image=torch.rand(1, 2, 24, 24)), "`image` must have 1 or 3 channels"),
        (dict(mask_image=np.ones((12, 12))), "`mask_image` is 12x12"),
        (dict(mask_image=torch.full((24, 24), 2.0)), "`mask_image` float values"),
        (dict(mask_image=[1, 0]), "`mask_image` must be a PIL image"),
        (dict(mask_image=torch.ones(2, 24, 24), class_labels=[1, 2, 3]), "batch sizes disagree"),
        (dict(order="random"), "`order` must be one of"),
        (dict(keep_bits=6), "`keep_bits` as an int must be in \\[0, k=5\\]"),
        (dict(keep_bits=[1, 0, 1, 0, 1]), "`keep_bits` as a sequence must be a boolean mask"),
        (dict(keep_bits=[True, False]), "`keep_bits` boolean mask must have shape \\(5,\\)"),
        (dict(keep_bits=True), "`keep_bits` must be None, an int"),
        (dict(paste_back="yes"), "`paste_back` must be a bool"),
        (dict(generator=gens(2)), "`generator` is a list of 2 generators"),
        (dict(output_type="jpeg"), "`output_type` must be one of"),
    ],
)
def test_validation_errors_name_the_argument(inpaint, kwargs, match):
    call = {"image": images(1), "mask_image": np.ones((SIZE, SIZE)), "class_labels": 1, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        inpaint(**call)


def test_default_order_follows_the_training_record(pipe, tmp_path):
    config = pipe.transformer.config
    assert default_order(config) == "raster"  # no record: the authors' models, the first bundled model
    record = {"random_order_anneal_start": 0, "random_order_anneal_end": 0}
    assert (
        default_order(BARConfig(**config.to_dict(), training_orders={**record, "edit_order_ratio": 0.0})) == "raster"
    )
    edited = BARConfig(**config.to_dict(), training_orders={**record, "edit_order_ratio": 0.25})
    assert default_order(edited) == "kept_first"
    edited.save_pretrained(tmp_path)  # the record survives config.json
    assert default_order(BARConfig.from_pretrained(tmp_path)) == "kept_first"
    edit = BARInpaintPipeline(**{**pipe.components, "transformer": BARForCausalImageModeling(edited)})
    assert edit.default_order == "kept_first"


def test_save_load_and_from_pipe_round_trips(pipe, inpaint, tmp_path):
    pixels, masks = images(2, seed=10), three_masks()[:2]
    expected = inpaint(pixels, masks, [1, 3], generator=gens(2), output_type="latent").images
    pipe.save_pretrained(tmp_path / "bar")  # a BARPipeline folder loads as an inpainting pipeline
    loaded = BARInpaintPipeline.from_pretrained(tmp_path / "bar")
    loaded.set_progress_bar_config(disable=True)
    assert torch.equal(loaded(pixels, masks, [1, 3], generator=gens(2), output_type="latent").images, expected)
    inpaint.save_pretrained(tmp_path / "edit")
    reloaded = BARInpaintPipeline.from_pretrained(tmp_path / "edit")
    reloaded.set_progress_bar_config(disable=True)
    assert torch.equal(reloaded(pixels, masks, [1, 3], generator=gens(2), output_type="latent").images, expected)
    assert reloaded.config.guidance_scale == pipe.config.guidance_scale and reloaded.id2label == pipe.id2label
    back = BARPipeline.from_pipe(inpaint)
    assert type(back) is BARPipeline and back.transformer is pipe.transformer and inpaint.vqvae is pipe.vqvae


def test_callback_sees_kept_tokens_and_can_interrupt(pipe, inpaint):
    pixels, mask = images(1, seed=11), make_mask("bottom_half", SIZE, SIZE)
    seen = []

    def callback(p, i, t, kwargs):
        seen.append((i, kwargs["bits"].shape[1], kwargs["latents"].clone()))
        if i == 30:
            p._interrupt = True
        return kwargs

    out = inpaint(
        pixels, mask, 1, generator=gens(1), callback_on_step_end=callback, order="raster", output_type="latent"
    )
    source = encoded(pipe, pixels)
    assert seen[0][:2] == (18, 19)  # the kept top half (3 of 6 token rows) is one teacher-forced prefill
    assert torch.equal(seen[0][2][0, :18], source[0, :18]) and (seen[0][2][0, 19:] == 2).all()
    # interrupted: same layout as a full result, kept and generated tokens as bits, MASK_BIT (2) after slot 30
    assert out.images.shape == source.shape and torch.equal(out.images[0, :18], source[0, :18])
    assert ((out.images[0, :31] == 0) | (out.images[0, :31] == 1)).all() and (out.images[0, 31:] == 2).all()

    def flip_kept(p, i, t, kwargs):  # the latents may be edited where tokens exist: a kept token changes
        if i == 18:
            kwargs["latents"][:, 0] = 1 - kwargs["latents"][:, 0]
        return kwargs

    kw = dict(order="raster", output_type="latent")
    edited = inpaint(pixels, mask, 1, generator=gens(1), callback_on_step_end=flip_kept, **kw).images
    assert torch.equal(edited[0, 0], 1 - source[0, 0]) and torch.equal(edited[0, 1:18], source[0, 1:18])

    def bad(p, i, t, kwargs):  # ... but never bits where nothing was generated yet
        kwargs["latents"][:] = 0
        return kwargs

    with pytest.raises(ValueError, match="MASK_BIT"):
        inpaint(pixels, mask, 1, generator=gens(1), callback_on_step_end=bad, **kw)


def test_ar_patch_size_two(tmp_path):
    components = get_dummy_components(patch_size=2)
    varied_bits(components["vqvae"])
    edit = BARInpaintPipeline(**components, guidance_scale=2.0)
    edit.set_progress_bar_config(disable=True)
    pixels, masks = images(2, seed=12), three_masks()[1:]
    out = edit(pixels, masks, [1, 2], generator=gens(2), output_type="latent", order="kept_first").images
    source = encoded(edit, pixels)
    regenerate = token_mask(masks, (3, 3))  # AR tokens are 2x2 blocks of latent tokens
    config = edit.transformer.config
    ar_out, ar_source = (patchify_bits(x, (6, 6), 2) for x in (out, source))
    assert torch.equal(ar_out[~regenerate], ar_source[~regenerate]) and config.bits_per_token == 20


def test_cli_inpaint_grid(pipe, tmp_path, capsys):
    from bar_hf import cli
    from bar_hf.masks import MASK_NAMES

    pipe.save_pretrained(tmp_path / "pipe")
    image = tmp_path / "image.png"
    Image.fromarray((images(1)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).resize((48, 48)).save(image)
    grid = tmp_path / "grid.png"
    code = cli.main(
        ["inpaint", str(image), "--mask", "bottom_half", "--class-labels", "1", "three", "--model",
         str(tmp_path / "pipe"), "--num-samples", "2", "--output", str(grid), "--quiet", "--scale", "2"]
    )  # fmt: skip
    assert code == 0 and Image.open(grid).height == 2 * (48 + 2)  # one row per class, 24 px cells upscaled x2
    assert Image.open(grid).width > 4 * 48  # original | mask | 2 completions
    code = cli.main(
        ["inpaint", str(image), "--mask", "middle", "--class-labels", "1", "--model", str(tmp_path / "pipe")]
    )
    assert code == 2 and "`--mask` must be one of" in capsys.readouterr().err
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["inpaint"].format_help()
    assert all(name in help_text for name in MASK_NAMES)


@pytest.mark.parametrize("order", ["raster", "kept_first"])
def test_compiled_editing_gives_the_eager_bits_without_recompiles(inpaint, order):
    torch._dynamo.reset()
    pixels, masks = images(3, seed=13), three_masks()
    kw = dict(order=order, output_type="latent", guidance_scale=3.0)
    eager = inpaint(pixels, masks, [0, 1, 3], generator=gens(3), **kw).images
    graphs = []

    def counting_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    inpaint.enable_compile(backend=counting_backend)  # fullgraph=True: a graph break would raise
    try:
        assert torch.equal(inpaint(pixels, masks, [0, 1, 3], generator=gens(3), **kw).images, eager)
        compiled_graphs = len(graphs)
        assert torch.equal(inpaint(pixels, masks, [0, 1, 3], generator=gens(3), **kw).images, eager)
        assert len(graphs) == compiled_graphs  # the second call reuses every graph
        # one backbone-step graph; one head-step graph per number of rows regenerating a slot (1, 2 or 3 here)
        assert 2 <= compiled_graphs <= 4, compiled_graphs
    finally:
        inpaint.disable_compile()


def test_remote_code_export_loads_the_inpaint_class(inpaint, tmp_path):
    from diffusers import DiffusionPipeline

    inpaint.save_pretrained(tmp_path, remote_code=True)
    loaded = DiffusionPipeline.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(loaded) is BARInpaintPipeline
