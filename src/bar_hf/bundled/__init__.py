"""The small BAR pipeline trained by this project on Fashion-MNIST, shipped inside the package."""

from pathlib import Path

BUNDLED_MODEL_DIR = Path(__file__).resolve().parent / "bar-fashion-mnist"


def bundled_model_path() -> str:
    """Path of the small BAR pipeline trained by this project on Fashion-MNIST and shipped with the package."""
    if not (BUNDLED_MODEL_DIR / "model_index.json").exists():
        raise FileNotFoundError(f"the bundled model is missing at {BUNDLED_MODEL_DIR} (broken installation?)")
    return str(BUNDLED_MODEL_DIR)


__all__ = ["bundled_model_path"]
