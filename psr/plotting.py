"""PNG figures drawn with PIL (matplotlib is not a dependency): line plots of curves and labelled image grids."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Distinguishable line colours (the Tableau 10 palette), reused cyclically.
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)
_BACKGROUND = (255, 255, 255)
_INK = (0, 0, 0)
_GRID = (225, 225, 225)


def _font():
    return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values (1, 2 or 5 × 10^k apart) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value += step
    return ticks


def _tick_label(value: float) -> str:
    return f"{value:.4g}"


def line_plot(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    x_label: str = "epoch",
    size: tuple[int, int] = (720, 420),
) -> Image.Image:
    """One line per entry of `series` (label → (x values, y values)), with axes, ticks and a legend below.

    Non-finite points are left out; a series with one point is drawn as a dot.
    """
    width, height = size
    font = _font()
    cleaned = {}
    for label, (xs, ys) in series.items():
        points = [(float(x), float(y)) for x, y in zip(xs, ys) if math.isfinite(float(x)) and math.isfinite(float(y))]
        if points:
            cleaned[label] = sorted(points)
    legend_rows = max(len(series), 1)
    line_height = 14
    legend_height = legend_rows * line_height + 10
    image = Image.new("RGB", (width, height + legend_height), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 70, width - 20, 30, height - 40
    draw.text((left, 8), title, fill=_INK, font=font)
    all_x = [x for points in cleaned.values() for x, _ in points]
    all_y = [y for points in cleaned.values() for _, y in points]
    if all_x:
        x_low, x_high = min(all_x), max(all_x)
        y_low, y_high = min(all_y), max(all_y)
        if x_high == x_low:
            x_low, x_high = x_low - 1, x_high + 1
        if y_high == y_low:
            pad = abs(y_low) * 0.05 or 1.0
            y_low, y_high = y_low - pad, y_high + pad
        y_pad = (y_high - y_low) * 0.05
        y_low, y_high = y_low - y_pad, y_high + y_pad

        def to_pixel(x: float, y: float) -> tuple[float, float]:
            return (left + (x - x_low) / (x_high - x_low) * (right - left),
                    bottom - (y - y_low) / (y_high - y_low) * (bottom - top))

        for tick in nice_ticks(y_low, y_high, 6):
            _, py = to_pixel(x_low, tick)
            draw.line([(left, py), (right, py)], fill=_GRID)
            label = _tick_label(tick)
            tw, th = _text_size(draw, label, font)
            draw.text((left - tw - 6, py - th / 2 - 1), label, fill=_INK, font=font)
        integer_x = all(float(x).is_integer() for x in all_x)  # epochs: no ticks between them
        for tick in nice_ticks(x_low, x_high, 6):
            if integer_x and not float(tick).is_integer():
                continue
            px, _ = to_pixel(tick, y_low)
            draw.line([(px, bottom), (px, bottom + 4)], fill=_INK)
            label = _tick_label(tick)
            tw, _ = _text_size(draw, label, font)
            draw.text((px - tw / 2, bottom + 6), label, fill=_INK, font=font)
        for number, (label, points) in enumerate(cleaned.items()):
            colour = PALETTE[number % len(PALETTE)]
            pixels = [to_pixel(x, y) for x, y in points]
            if len(pixels) > 1:
                draw.line(pixels, fill=colour, width=2)
            for px, py in pixels:
                draw.ellipse([px - 2.5, py - 2.5, px + 2.5, py + 2.5], fill=colour)
    else:
        draw.text((left + 10, (top + bottom) // 2), "no values", fill=_INK, font=font)
    draw.rectangle([left, top, right, bottom], outline=_INK)
    tw, _ = _text_size(draw, x_label, font)
    draw.text(((left + right - tw) / 2, bottom + 22), x_label, fill=_INK, font=font)
    for number, label in enumerate(series):
        y = height + 4 + number * line_height
        colour = PALETTE[number % len(PALETTE)]
        draw.rectangle([left, y + 3, left + 18, y + 7], fill=colour)
        draw.text((left + 26, y), label if label in cleaned else f"{label} (no values)", fill=_INK, font=font)
    return image


def image_grid(
    rows: Sequence[tuple[str, Sequence[np.ndarray]]],
    cell: int = 96,
    gap: int = 4,
) -> Image.Image:
    """Rows of uint8 RGB images, each row labelled on its left; every image is scaled (nearest) to `cell` px."""
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = max((_text_size(probe, label, font)[0] for label, _ in rows), default=0) + 2 * gap
    columns = max((len(images) for _, images in rows), default=0)
    width = label_width + columns * (cell + gap) + gap
    height = len(rows) * (cell + gap) + gap
    canvas = Image.new("RGB", (max(width, 1), max(height, 1)), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for r, (label, images) in enumerate(rows):
        y = gap + r * (cell + gap)
        _, th = _text_size(draw, label, font)
        draw.text((gap, y + (cell - th) / 2), label, fill=_INK, font=font)
        for c, pixels in enumerate(images):
            tile = Image.fromarray(np.asarray(pixels, np.uint8)).convert("RGB")
            scale = cell / max(tile.size)
            tile = tile.resize((max(1, round(tile.width * scale)), max(1, round(tile.height * scale))), Image.NEAREST)
            canvas.paste(tile, (label_width + c * (cell + gap), y))
    return canvas
