"""Hugging Face Space: the `bar-hf app` page (Generate and Edit tabs) on the bundled Fashion-MNIST BAR model.

`make space` copies the `bar_hf` package next to this file; the Space variable `BAR_HF_MODEL` (a Hub id or folder
of a saved BARPipeline) serves another model.
"""

import os

from bar_hf.app import BARApp, build_demo
from bar_hf.app.demo import CSS

demo = build_demo(BARApp.from_pretrained(os.environ.get("BAR_HF_MODEL") or None))
demo.queue(default_concurrency_limit=1)

if __name__ == "__main__":
    demo.launch(css=CSS)
