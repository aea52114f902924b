"""PNG line plot and image grid for `scheduler_sweep.py`, drawn with Pillow (no plotting dependency)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
          (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]  # fmt: skip


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
    start = math.floor(low / step) * step
    return [start + i * step for i in range(math.ceil((high - start) / step - 1e-9) + 1)]


def _panel(draw, box, lines, x_label, y_label, title, font) -> None:
    """One line chart in `box` (x0, y0, x1, y1); `lines` maps a name to sorted (x, y) points."""
    x0, y0, x1, y1 = box
    xs = [x for points in lines.values() for x, _ in points]
    ys = [y for points in lines.values() for _, y in points if y is not None and math.isfinite(y)]
    if not xs or not ys:
        draw.text((x0, y0), f"{title}: no data", fill="black", font=font)
        return
    x_ticks, y_ticks = _ticks(min(0.0, min(xs)), max(xs)), _ticks(min(ys), max(ys))
    lo_x, hi_x, lo_y, hi_y = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def pos(x, y):
        return x0 + (x - lo_x) / (hi_x - lo_x) * (x1 - x0), y1 - (y - lo_y) / (hi_y - lo_y) * (y1 - y0)

    draw.rectangle(box, outline="black")
    for t in x_ticks:
        px, _ = pos(t, lo_y)
        draw.line([(px, y1), (px, y1 + 4)], fill="black")
        draw.text((px - 10, y1 + 6), f"{t:g}", fill="black", font=font)
    for t in y_ticks:
        _, py = pos(lo_x, t)
        draw.line([(x0 - 4, py), (x0, py)], fill="black")
        draw.line([(x0, py), (x1, py)], fill=(230, 230, 230))
        draw.text((x0 - 44, py - 6), f"{t:.3g}", fill="black", font=font)
    draw.text(((x0 + x1) / 2 - 60, y1 + 22), x_label, fill="black", font=font)
    draw.text((x0, y0 - 16), f"{title} ({y_label})", fill="black", font=font)
    for index, points in enumerate(lines.values()):
        color = COLORS[index % len(COLORS)]
        coords = [pos(x, y) for x, y in points if y is not None and math.isfinite(y)]
        if len(coords) > 1:
            draw.line(coords, fill=color, width=2)
        for cx, cy in coords:
            draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=color)


def quality_plot(lines_by_metric: dict[str, dict[str, list[tuple[float, float]]]], path, x_label: str) -> None:
    """One panel per metric side by side, one line per rule, shared legend below."""
    font = ImageFont.load_default()
    width, height, margin = 420, 300, 60
    names = list(dict.fromkeys(name for lines in lines_by_metric.values() for name in lines))
    legend_rows = math.ceil(len(names) / 3)
    image = Image.new(
        "RGB", (len(lines_by_metric) * (width + margin) + margin, height + 110 + 16 * legend_rows), "white"
    )
    draw = ImageDraw.Draw(image)
    for index, (metric, lines) in enumerate(lines_by_metric.items()):
        left = margin + index * (width + margin)
        colored = {name: lines[name] for name in names if name in lines}
        ordered = {name: colored.get(name, []) for name in names}
        _panel(draw, (left, 30, left + width, 30 + height), ordered, x_label, metric.split(" (")[-1].rstrip(")"),
               metric.split(" (")[0], font)  # fmt: skip
    for index, name in enumerate(names):
        x = margin + (index % 3) * 260
        y = height + 90 + 16 * (index // 3)
        draw.line([(x, y + 6), (x + 24, y + 6)], fill=COLORS[index % len(COLORS)], width=3)
        draw.text((x + 30, y), name, fill="black", font=font)
    image.save(path)


def image_grid(rows: list[tuple[str, np.ndarray]], path, scale: int = 2) -> None:
    """Rows of uint8 images `(n, H, W, C)` with a label on the left of each row."""
    font = ImageFont.load_default()
    n, h, w = rows[0][1].shape[:3]
    label_width, pad = 150, 2
    canvas = Image.new("RGB", (label_width + n * (w * scale + pad), len(rows) * (h * scale + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, images) in enumerate(rows):
        top = r * (h * scale + pad)
        draw.text((4, top + h * scale // 2 - 6), label, fill="black", font=font)
        for c, array in enumerate(images):
            array = array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array
            tile = Image.fromarray(array).convert("RGB").resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (label_width + c * (w * scale + pad), top))
    canvas.save(path)
