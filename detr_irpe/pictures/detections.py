"""Detections drawn on images: boxes and "name score" labels, sized to the image and kept
inside it (``tools/predict.py --render`` and the pictures at the end of a training run).
"""

from __future__ import annotations

import os

import torch
from PIL import Image
from torch import Tensor

# Distinct box colours, picked by category id.
PALETTE = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
    (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195),
    (128, 128, 0), (255, 215, 180), (0, 0, 128), (255, 225, 25), (128, 128, 128),
)  # fmt: skip


def _label_font() -> str | None:
    """A TrueType font file (matplotlib's DejaVu Sans) so labels scale with the image;
    ``None`` (PIL's small bitmap font) when matplotlib is missing."""
    try:
        from matplotlib import font_manager
    except ImportError:
        return None
    try:
        return font_manager.findfont("DejaVu Sans", fallback_to_default=True)
    except Exception:
        return None


def detection_style(height: int, width: int) -> tuple[int, int]:
    """(line width, font size) in pixels for an image of this size: both proportional to
    its shorter side (1 px and 7 px on a 128-px image, 3 px and 25 px on an 800-px one)."""
    short = min(height, width)
    return max(1, round(short / 300)), min(48, max(7, round(short / 32)))


def _label_box(text_w: int, text_h: int, box: list[float], width: int, height: int):
    """Top-left corner of a label: above the box when it fits, else just inside its top;
    always inside the image."""
    x0, y0 = box[0], box[1]
    y = y0 - text_h if y0 - text_h >= 0 else y0
    x = min(max(0, x0), max(0, width - text_w))
    y = min(max(0, y), max(0, height - text_h))
    return round(x), round(y)


def draw_detections(
    image: Tensor | Image.Image,
    detections: dict,
    line_width: int | None = None,
    font_size: int | None = None,
) -> Tensor:
    """Draw boxes and "name score" labels on a copy of ``image``.

    image: uint8 (3, H, W) tensor or PIL image; detections: a :meth:`Detector.predict`
    dict (``boxes`` absolute xyxy pixels of this image, ``scores``, ``labels``,
    ``names``).  Returns a uint8 (3, H, W) tensor of the same size.  Line width and
    font size default to :func:`detection_style` of the image; every label stays inside
    the image (above its box when there is room, else inside the box's top edge).
    """
    from PIL import ImageDraw, ImageFont

    if isinstance(image, Image.Image):
        image = torch.from_numpy(_rgb_array(image)).permute(2, 0, 1)
    if image.dtype != torch.uint8 or image.dim() != 3:
        raise ValueError(f"expected a uint8 (3, H, W) image, got {image.dtype} {tuple(image.shape)}")
    if len(detections["boxes"]) == 0:
        return image.clone()
    height, width = image.shape[-2:]
    default_line, default_font = detection_style(height, width)
    line_width, font_size = line_width or default_line, font_size or default_font
    path = _label_font()
    font = ImageFont.truetype(path, font_size) if path else ImageFont.load_default()
    canvas = Image.fromarray(image.permute(1, 2, 0).contiguous().cpu().numpy())
    draw = ImageDraw.Draw(canvas)
    boxes = detections["boxes"].detach().cpu().float().tolist()
    colors = [PALETTE[int(label) % len(PALETTE)] for label in detections["labels"]]
    for box, color in zip(boxes, colors):
        draw.rectangle(box, outline=color, width=line_width)
    # Labels over all boxes, the highest score last (on top).
    rows = list(zip(boxes, detections["names"], detections["scores"], colors))
    for box, name, score, color in sorted(rows, key=lambda row: float(row[2])):
        text = f"{name} {float(score):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        pad = max(1, font_size // 8)
        text_w, text_h = right - left + 2 * pad, bottom - top + 2 * pad
        x, y = _label_box(text_w, text_h, box, width, height)
        draw.rectangle([x, y, x + text_w - 1, y + text_h - 1], fill=color)
        draw.text((x + pad - left, y + pad - top), text, fill="black", font=font)
    return torch.from_numpy(_rgb_array(canvas)).permute(2, 0, 1)


def _rgb_array(image: Image.Image):
    import numpy as np

    return np.array(image.convert("RGB"))


def save_png(image: Tensor, path: str | os.PathLike) -> None:
    """Write a uint8 (3, H, W) tensor as a PNG file."""
    Image.fromarray(image.permute(1, 2, 0).contiguous().cpu().numpy()).save(path, format="PNG")
