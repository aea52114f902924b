"""The Gradio page of `bar-hf app`: a Generate tab and an Edit tab on one loaded BAR pipeline.

The callbacks are thin: each calls one method of [`bar_hf.app.core.BARApp`] through `run_safely`, so a bad input
(an empty class, a NaN guidance scale, a mask of the wrong size, a file that is not an image) shows the pipeline's
own message in the tab's status box and the server goes on serving.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import gradio as gr
from PIL import Image

from .core import GUIDANCE_SCHEDULES, MASK_CHOICES, ORDERS, PAINTED_MASK, SCHEDULERS, BARApp, run_safely

#: pixel art: show the model's small images with sharp pixels when the browser scales them up
CSS = """
#gen-gallery img, #edit-gallery img, #edit-source img { image-rendering: pixelated; }
"""
#: the editing canvas shows the image upscaled (nearest) to at least this many pixels on its long side
CANVAS_SIZE = 256


def _status(text: str, error: bool = False) -> str:
    return f"**Error:** {text}" if error else text


def _canvas_image(image: Image.Image) -> Image.Image:
    """The image to paint on: upscaled by an integer factor (nearest) so a brush stroke covers whole pixels."""
    factor = max(1, CANVAS_SIZE // max(image.size))
    return image.convert("RGB").resize((image.width * factor, image.height * factor), Image.NEAREST)


def build_demo(app: BARApp | None = None, model: str | None = None) -> gr.Blocks:
    """The page for `app` (or for `BARApp.from_pretrained(model)`; default: the bundled model)."""
    app = app or BARApp.from_pretrained(model)
    defaults = app.defaults()
    choices = app.class_choices()
    height, width = app.image_size
    model_name = app.model or "the bundled Fashion-MNIST model"

    with gr.Blocks(title="BAR image generation", analytics_enabled=False) as demo:
        gr.Markdown(
            f"# BAR — masked Bit AutoRegressive image generation\n"
            f"Model: `{model_name}` · {width}×{height} images · {len(choices)} classes · "
            f"scheduler `{type(app.pipe.scheduler).__name__}`. Image *i* of a request uses seed *seed + i*, "
            "as `bar-hf generate --seed`; the settings JSON reproduces a picture."
        )
        images_state = gr.State([])
        selected_state = gr.State(0)
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("Generate", id="generate", elem_id="tab-generate"):
                c = _generate_tab(defaults, choices)
            with gr.Tab("Edit", id="edit", elem_id="tab-edit"):
                c.__dict__.update(vars(_edit_tab(defaults, choices, width, height)))
        _wire_events(app, c, images_state, selected_state, tabs)
    return demo


def _generate_tab(defaults: dict, choices: list):
    """The Generate tab's controls and outputs."""
    with gr.Row():
        with gr.Column(scale=1):
            gen_classes = gr.Dropdown(
                choices, value=[choices[0][1]], multiselect=True, allow_custom_value=True,
                label="Classes", info="names or ids; one row of images per class", elem_id="gen-classes",
            )  # fmt: skip
            gen_count = gr.Slider(1, 16, value=4, step=1, label="Images per class", elem_id="gen-count")
            gen_seed = gr.Number(0, precision=0, label="Seed (image i uses seed + i)", elem_id="gen-seed")
            gen_button = gr.Button("Generate", variant="primary", elem_id="gen-run")
            with gr.Accordion("Sampling", open=True):
                gen_guidance = gr.Number(
                    defaults["guidance_scale"], label="Guidance scale (CFG is on above 1)",
                    elem_id="gen-guidance",
                )  # fmt: skip
                gen_schedule = gr.Radio(
                    list(GUIDANCE_SCHEDULES),
                    value=defaults["guidance_schedule"],
                    label="Guidance schedule",
                )
                gen_temperature = gr.Number(defaults["temperature"], label="Temperature", elem_id="gen-temperature")
                gen_scheduler = gr.Radio(
                    list(SCHEDULERS), value=defaults["scheduler"], label="Bit scheduler",
                    elem_id="gen-scheduler",
                )  # fmt: skip
                gen_steps = gr.Slider(
                    1, defaults["max_inference_steps"], value=defaults["num_inference_steps"], step=1,
                    label="Head steps per token (num_inference_steps)", elem_id="gen-steps",
                )  # fmt: skip
        with gr.Column(scale=2):
            gen_status = gr.Markdown("Pick classes and press Generate.", elem_id="gen-status")
            gen_gallery = gr.Gallery(
                label="Images", columns=4, format="png", object_fit="contain", height=420,
                elem_id="gen-gallery", interactive=False,
            )  # fmt: skip
            send_button = gr.Button("Send the selected image to Edit", elem_id="gen-send")
            with gr.Row():
                gen_zip = gr.File(label="Images (zip, with settings.json)", height=90, elem_id="gen-zip")
                gen_settings_file = gr.File(label="Settings (JSON)", height=90, elem_id="gen-settings-file")
            gen_settings = gr.JSON(label="Settings", elem_id="gen-settings")
    return SimpleNamespace(
        gen_button=gen_button,
        gen_classes=gen_classes,
        gen_count=gen_count,
        gen_gallery=gen_gallery,
        gen_guidance=gen_guidance,
        gen_schedule=gen_schedule,
        gen_scheduler=gen_scheduler,
        gen_seed=gen_seed,
        gen_settings=gen_settings,
        gen_settings_file=gen_settings_file,
        gen_status=gen_status,
        gen_steps=gen_steps,
        gen_temperature=gen_temperature,
        gen_zip=gen_zip,
        send_button=send_button,
    )


def _edit_tab(defaults: dict, choices: list, width: int, height: int):
    """The Edit tab's controls and outputs."""
    with gr.Row():
        with gr.Column(scale=1):
            edit_source = gr.Image(
                type="filepath", image_mode=None, sources=["upload", "clipboard"], format="png",
                label=f"Image to edit ({width}×{height}, or its aspect ratio)", height=200,
                elem_id="edit-source",
            )  # fmt: skip
            edit_canvas = gr.ImageEditor(
                type="numpy", image_mode="RGBA", sources=[], transforms=[], layers=False, format="png",
                brush=gr.Brush(default_size=24, colors=["#ff2d55"], color_mode="fixed"),
                canvas_size=(CANVAS_SIZE, CANVAS_SIZE), label="Paint the region to regenerate",
                elem_id="edit-canvas",
            )  # fmt: skip
            edit_mask = gr.Dropdown(
                list(MASK_CHOICES), value=PAINTED_MASK, label="Mask",
                info="the painted region, a named mask, or an uploaded mask image", elem_id="edit-mask",
            )  # fmt: skip
            edit_mask_upload = gr.Image(
                type="filepath", image_mode=None, sources=["upload"], format="png", height=120,
                label="Mask image (white = regenerate; for 'uploaded mask image')",
                elem_id="edit-mask-upload",
            )  # fmt: skip
        with gr.Column(scale=1):
            edit_class = gr.Dropdown(
                choices, value=choices[0][1], allow_custom_value=True, label="Class of the completions",
                elem_id="edit-class",
            )  # fmt: skip
            edit_order = gr.Radio(list(ORDERS), value=defaults["order"], label="Order", elem_id="edit-order")
            edit_keep = gr.Slider(
                0, defaults["bits_per_token"] - 1, value=0, step=1,
                label="Kept bits of regenerated tokens (keep_bits; 0 = none)", elem_id="edit-keep",
            )  # fmt: skip
            edit_count = gr.Slider(1, 8, value=4, step=1, label="Completions", elem_id="edit-count")
            edit_seed = gr.Number(0, precision=0, label="Seed (completion i uses seed + i)")
            edit_guidance = gr.Number(defaults["guidance_scale"], label="Guidance scale")
            edit_steps = gr.Slider(
                1, defaults["max_inference_steps"], value=defaults["num_inference_steps"], step=1,
                label="Head steps per token",
            )  # fmt: skip
            edit_temperature = gr.Number(defaults["temperature"], label="Temperature")
            edit_button = gr.Button("Edit", variant="primary", elem_id="edit-run")
        with gr.Column(scale=2):
            edit_status = gr.Markdown(
                "Upload an image (or send one from Generate), paint over the part to regenerate, press Edit.",
                elem_id="edit-status",
            )
            edit_gallery = gr.Gallery(
                label="Original · mask · completions", columns=3, format="png", object_fit="contain",
                height=420, elem_id="edit-gallery", interactive=False,
            )  # fmt: skip
            with gr.Row():
                edit_zip = gr.File(label="Edit (zip, with settings.json)", height=90, elem_id="edit-zip")
                edit_settings_file = gr.File(label="Settings (JSON)", height=90, elem_id="edit-settings-file")
            edit_settings = gr.JSON(label="Settings", elem_id="edit-settings")
    return SimpleNamespace(
        edit_button=edit_button,
        edit_canvas=edit_canvas,
        edit_class=edit_class,
        edit_count=edit_count,
        edit_gallery=edit_gallery,
        edit_guidance=edit_guidance,
        edit_keep=edit_keep,
        edit_mask=edit_mask,
        edit_mask_upload=edit_mask_upload,
        edit_order=edit_order,
        edit_seed=edit_seed,
        edit_settings=edit_settings,
        edit_settings_file=edit_settings_file,
        edit_source=edit_source,
        edit_status=edit_status,
        edit_steps=edit_steps,
        edit_temperature=edit_temperature,
        edit_zip=edit_zip,
    )


def _wire_events(app: BARApp, c: SimpleNamespace, images_state, selected_state, tabs):
    """Connect the buttons to the event handlers below."""

    def on_generate(classes, count, seed, guidance, schedule, temperature, scheduler, steps, progress=gr.Progress()):
        report = lambda fraction, desc: progress(fraction, desc=desc)  # noqa: E731
        return generate_event(app, classes, count, seed, guidance, schedule, temperature, scheduler, steps, report)

    c.gen_button.click(
        on_generate,
        [
            c.gen_classes,
            c.gen_count,
            c.gen_seed,
            c.gen_guidance,
            c.gen_schedule,
            c.gen_temperature,
            c.gen_scheduler,
            c.gen_steps,
        ],
        [c.gen_gallery, c.gen_status, c.gen_zip, c.gen_settings_file, c.gen_settings, images_state],
        api_name="generate",
    )

    def on_select(evt: gr.SelectData):
        return evt.index

    c.gen_gallery.select(on_select, None, selected_state)
    c.send_button.click(send_event, [images_state, selected_state], [c.edit_source, tabs, c.gen_status])
    c.edit_source.change(lambda path: source_event(app, path), c.edit_source, [c.edit_canvas, c.edit_status])

    def on_edit(
        source, mask_choice, canvas, mask_upload, label, order, keep, count, seed, guidance, steps, temperature,
        progress=gr.Progress(),
    ):  # fmt: skip
        report = lambda fraction, desc: progress(fraction, desc=desc)  # noqa: E731
        return edit_event(
            app, source, mask_choice, canvas, mask_upload, label, order, keep, count, seed, guidance, steps,
            temperature, report,
        )  # fmt: skip

    c.edit_button.click(
        on_edit,
        [
            c.edit_source, c.edit_mask, c.edit_canvas, c.edit_mask_upload, c.edit_class, c.edit_order, c.edit_keep, c.edit_count,
            c.edit_seed, c.edit_guidance, c.edit_steps, c.edit_temperature,
        ],
        [c.edit_gallery, c.edit_status, c.edit_zip, c.edit_settings_file, c.edit_settings],
        api_name="edit",
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------- event handlers
# Module-level so that they are unit-tested without a browser (tests/test_app.py); `build_demo` wires them to the page.
def generate_event(
    app: BARApp, classes, count, seed, guidance, schedule, temperature, scheduler, steps, progress=None
):
    """Generate button → (gallery, status, zip, settings file, settings, images state); on a bad input only the
    status changes (the pipeline's message), the other outputs keep their value."""
    start = time.perf_counter()
    result, error = run_safely(
        app.generate, classes, count, seed, guidance, schedule, temperature, scheduler, steps, progress=progress
    )
    if error is not None:
        return gr.skip(), _status(error, True), gr.skip(), gr.skip(), gr.skip(), gr.skip()
    seconds = time.perf_counter() - start
    return (
        list(zip(result.images, result.captions)),
        _status(f"Generated {len(result.images)} images in {seconds:.1f} s."),
        result.zip_path,
        result.settings_path,
        result.settings,
        result.images,
    )


def send_event(images, index):
    """ "Send the selected image to Edit" → (Edit tab's image, selected tab, Generate status)."""
    if not images:
        return gr.skip(), gr.skip(), _status("generate images first, then select one to send.", True)
    index = min(int(index or 0), len(images) - 1)
    return images[index], gr.Tabs(selected="edit"), _status(f"Sent image {index + 1} to the Edit tab.")


def source_event(app: BARApp, path):
    """A new image to edit → (the painting canvas: the image upscaled, no strokes; Edit status)."""
    if path is None:
        return None, gr.skip()
    image, error = run_safely(app.load_image, path)
    if error is not None:
        return None, _status(error, True)
    canvas = _canvas_image(image)
    message = f"Loaded a {image.width}×{image.height} image: paint over the part to regenerate, then press Edit."
    return {"background": canvas, "layers": [], "composite": canvas}, _status(message)


def edit_event(
    app: BARApp, source, mask_choice, canvas, mask_upload, label, order, keep, count, seed, guidance, steps,
    temperature, progress=None,
):  # fmt: skip
    """Edit button → (gallery: original, mask, completions; status; zip; settings file; settings)."""
    start = time.perf_counter()
    result, error = run_safely(
        app.edit, source, mask_choice, canvas, mask_upload, label, order, keep, count, seed, guidance, steps,
        temperature, progress=progress,
    )  # fmt: skip
    if error is not None:
        return gr.skip(), _status(error, True), gr.skip(), gr.skip(), gr.skip()
    seconds = time.perf_counter() - start
    cells: list[Any] = [result.original, result.mask, *result.completions]
    return (
        list(zip(cells, result.captions)),
        _status(f"{len(result.completions)} completions in {seconds:.1f} s ({result.settings['order']})."),
        result.zip_path,
        result.settings_path,
        result.settings,
    )
