"""`bar-hf app`: a local web app (Gradio) on a BAR pipeline — generate class-conditional images, edit images.

    pip install "bar_hf[app]"
    bar-hf app                        # the bundled Fashion-MNIST model on http://127.0.0.1:7860
    bar-hf app --model <dir|hub id> --host 0.0.0.0 --port 8080 --share

Gradio is imported only when the page is built, so `bar_hf.app.core` (the page's logic) and this module import
without it.
"""

from __future__ import annotations

import argparse
import sys

from .core import BARApp

__all__ = ["BARApp", "add_app_subparser", "build_demo", "launch"]


def build_demo(app: BARApp | None = None, model: str | None = None):
    """The `gradio.Blocks` page (see [`bar_hf.app.demo.build_demo`])."""
    from .demo import build_demo as _build

    return _build(app, model)


def launch(
    model: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
):
    """Load `model` (default: the bundled model), build the page and serve it; returns the `gradio.Blocks`."""
    from .demo import CSS

    demo = build_demo(BARApp.from_pretrained(model))
    demo.queue(default_concurrency_limit=1)
    demo.launch(
        server_name=host, server_port=port, share=share, css=CSS, prevent_thread_lock=True, quiet=quiet,
        footer_links=["api", "gradio"],
    )  # fmt: skip
    if not prevent_thread_lock:
        demo.block_thread()
    return demo


def _app_command(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        print('bar-hf app: error: the web app needs Gradio: pip install "bar_hf[app]"', file=sys.stderr)
        return 2
    launch(args.model, host=args.host, port=args.port, share=args.share)
    return 0


def add_app_subparser(subparsers) -> argparse.ArgumentParser:
    """Register `bar-hf app` on the `bar-hf` command line."""
    parser = subparsers.add_parser("app", help="local web app (Gradio): generate and edit images with a BAR model")
    parser.add_argument("--model", default=None, help="pipeline folder or Hub id (default: the bundled model)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (Gradio's server_name)")
    parser.add_argument("--port", type=int, default=None, help="port (Gradio's server_port; default: 7860 or next)")
    parser.add_argument("--share", action="store_true", help="also open a public *.gradio.live link (Gradio's share)")
    parser.set_defaults(func=_app_command)
    return parser
