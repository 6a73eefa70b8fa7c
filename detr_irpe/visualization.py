"""Pictures: detections drawn on images, training curves from ``log.txt``, and the learned
iRPE tables of a checkpoint.

- :func:`draw_detections` / :func:`save_png`: boxes and "name score" labels on an image
  (PIL), sized to the image and kept inside it, used by ``tools/predict.py --render``;
- :func:`read_log` / :func:`plot_logs`: loss terms, class error, AP and AP50 per epoch of
  one or more runs (``tools/plot_logs.py``);
- :func:`irpe_tables` / :func:`plot_irpe_tables`: every encoder layer's iRPE table as heat
  maps (product method) or per-bucket profiles (``tools/visualize_rpe.py``).

matplotlib is imported inside the plotting functions and drawn through its Agg canvas
directly (no ``pyplot``, no global backend switch), so importing this module costs nothing
and works without a display.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from .checkpoint import Checkpoint, load_checkpoint
from .models.irpe import IRPEConfig

# Distinct box colours, picked by category id.
PALETTE = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
    (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195),
    (128, 128, 0), (255, 215, 180), (0, 0, 128), (255, 225, 25), (128, 128, 128),
)  # fmt: skip


# ----------------------------------------------------------------------------------------
# Detections on images.


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


# ----------------------------------------------------------------------------------------
# Training curves.

# (log key without the train_/test_ prefix, panel title)
CURVE_PANELS = (
    ("loss", "total loss (weighted)"),
    ("loss_ce", "loss_ce (weighted)"),
    ("loss_bbox", "loss_bbox (weighted)"),
    ("loss_giou", "loss_giou (weighted)"),
    ("class_error", "class_error (%)"),
)
AP_PANELS = ((0, "box AP"), (1, "box AP50"))  # indices into test_coco_eval_bbox


def read_log(path: str | os.PathLike) -> list[dict]:
    """The JSON lines of a run's ``log.txt`` (``path`` is the file or its folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "log.txt"
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {str(path)!r}")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not a JSON line ({err})") from None
    if not rows:
        raise ValueError(f"{path}: the log is empty")
    return rows


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for n, row in enumerate(rows):
        value = row.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            xs.append(row.get("epoch", n))
            ys.append(float(value))
    return xs, ys


def _ap_series(rows: list[dict], index: int) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for n, row in enumerate(rows):
        stats = row.get("test_coco_eval_bbox")
        if isinstance(stats, list) and len(stats) > index and stats[index] is not None:
            xs.append(row.get("epoch", n))
            ys.append(float(stats[index]))
    return xs, ys


def plot_logs(
    runs: Sequence[str | os.PathLike],
    out: str | os.PathLike = "curves.png",
    labels: Sequence[str] | None = None,
) -> Path:
    """Draw the training curves of one or more runs into one PNG and return its path.

    runs: output folders (or their ``log.txt`` files).  Panels: total loss, loss_ce,
    loss_bbox, loss_giou, class_error (train solid, test dashed), box AP and AP50 (epochs
    with ``test_coco_eval_bbox`` only).  Each run has one colour; ``labels`` name them in
    the legend (default: the folder names).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if not runs:
        raise ValueError("no runs given")
    if labels is not None and len(labels) != len(runs):
        raise ValueError(f"{len(labels)} labels for {len(runs)} runs")
    logs = [read_log(run) for run in runs]
    if labels is None:
        labels = [_run_name(run) for run in runs]
    colors = [f"C{n % 10}" for n in range(len(runs))]

    fig = Figure(figsize=(18, 8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 4).ravel()
    for ax, (key, title) in zip(axes, CURVE_PANELS):
        for rows, color in zip(logs, colors):
            for split, style in (("train", "-"), ("test", "--")):
                xs, ys = _series(rows, f"{split}_{key}")
                if xs:
                    ax.plot(xs, ys, style, color=color, marker="." if len(xs) < 30 else None)
        _decorate(ax, title)
    for ax, (index, title) in zip(axes[len(CURVE_PANELS) :], AP_PANELS):
        for rows, color in zip(logs, colors):
            xs, ys = _ap_series(rows, index)
            if xs:
                ax.plot(xs, ys, "-o", color=color, markersize=3)
        _decorate(ax, title)
    legend_ax = axes[-1]
    legend_ax.axis("off")
    handles = [Line2D([], [], color=c, label=str(name)) for c, name in zip(colors, labels)]
    handles += [Line2D([], [], color="gray", linestyle="-", label="train"),
                Line2D([], [], color="gray", linestyle="--", label="test")]
    legend_ax.legend(handles=handles, loc="center", frameon=False)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def _decorate(ax, title: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    if not ax.lines:
        ax.text(0.5, 0.5, "not in the log", ha="center", va="center", transform=ax.transAxes,
                color="gray")


def _run_name(run: str | os.PathLike) -> str:
    path = Path(run).resolve()
    return path.parent.name if path.is_file() else path.name


# ----------------------------------------------------------------------------------------
# iRPE tables.

_TABLE_KEY = re.compile(
    r"^transformer\.encoder\.layers\.(\d+)\.self_attn\.rpe_([qkv])\."
    r"(?:rp_(rows|cols)\.)?lookup_table_(weight|bias)$"
)


@dataclass
class IRPETable:
    """One learned iRPE table of one encoder layer, reduced to a value per bucket.

    values: (H', n_buckets) float; the L2 norm over ``head_dim`` for ``ctx`` tables
    (``lookup_table_weight``), the table itself for ``bias`` tables.  H' is 1 when the
    table is shared by all heads.  For ``product``, bucket ``r * side + c`` holds the
    (row, column) offset bucket (r - B, c - B) with B = (side - 1) // 2, offsets being
    query minus key, compressed logarithmically beyond ``alpha`` (docs/irpe.md).
    """

    layer: int
    where: str  # "q", "k" or "v": what the table is attached to
    part: str  # "rows" / "cols" for the two tables of ``cross``, else ""
    mode: str  # "ctx" or "bias"
    method: str  # product, euc, quant or cross
    values: Tensor

    @property
    def heads(self) -> int:
        return self.values.shape[0]

    @property
    def side(self) -> int:
        n = self.values.shape[1]
        return math.isqrt(n) if self.method == "product" else n

    def grid(self) -> Tensor:
        """(H', side, side) for ``product``: [h, r, c] is bucket r * side + c."""
        if self.method != "product":
            raise ValueError(f"{self.method} tables have no 2-D grid")
        return self.values.reshape(self.heads, self.side, self.side)

    @property
    def name(self) -> str:
        part = f".{self.part}" if self.part else ""
        return f"layer {self.layer} rpe_{self.where}{part}"


def irpe_tables(state_dict: dict, irpe: IRPEConfig | None = None) -> list[IRPETable]:
    """The encoder's iRPE tables in a DETR state dict, by layer then q, k, v.

    ``irpe`` (the model's configuration) tells ``product`` from ``euc``/``quant``;
    without it a table with an odd-square number of buckets is read as ``product``.
    """
    found = []
    for key, tensor in state_dict.items():
        match = _TABLE_KEY.match(key)
        if match is None:
            continue
        layer, where, part, kind = match.groups()
        table = tensor.detach().float().cpu()
        if kind == "bias":
            mode, values = "bias", table  # (H', n)
        elif where == "v":
            mode, values = "ctx", table.norm(dim=2)  # (H', n, d) -> (H', n)
        else:
            mode, values = "ctx", table.norm(dim=1)  # (H', d, n) -> (H', n)
        n = values.shape[1]
        if part:
            method = "cross"
        elif irpe is not None:
            method = irpe.method
        else:
            root = math.isqrt(n)
            method = "product" if root * root == n and root % 2 else "euc"
        if method == "product" and math.isqrt(n) ** 2 != n:
            raise ValueError(f"{key}: {n} buckets is not a square; not a product table")
        found.append(IRPETable(int(layer), where, part or "", mode, method, values))
    return sorted(found, key=lambda t: (t.layer, "qkv".index(t.where), t.part))


def plot_irpe_tables(
    checkpoint: str | os.PathLike | Checkpoint,
    out: str | os.PathLike = "rpe.png",
    trust: bool = False,
) -> Path:
    """Draw every encoder layer's iRPE table of a checkpoint into one PNG.

    product: a heat map per layer (and per head when heads have their own tables) of
    the table's L2 norm over ``head_dim`` (ctx) or its value (bias), row offset bucket on
    the y axis, column offset bucket on the x axis, zero offset in the centre.
    euc / quant / cross: a curve per table over the buckets, a line per head.
    Raises ``ValueError`` when the checkpoint has no iRPE tables.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    source = checkpoint if isinstance(checkpoint, Checkpoint) else None
    name = "checkpoint" if source is not None else str(checkpoint)
    ckpt = source or load_checkpoint(str(checkpoint), trust=trust)
    irpe = ckpt.config().irpe
    tables = irpe_tables(ckpt.model, irpe)
    if not tables:
        raise ValueError(
            f"{name}: no iRPE tables in this checkpoint (its encoder has no "
            f"'rpe_q/k/v.lookup_table_*' weights: plain DETR, enc_rpe2d='')"
        )
    spec = irpe.to_string() if irpe is not None else "iRPE"
    if tables[0].method == "product":
        panels = [(t, h) for t in tables for h in range(t.heads)]
        heads = max(t.heads for t in tables)
        ncols = heads if heads > 1 else min(len(panels), 3)
    else:
        panels = [(t, None) for t in tables]
        ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.6 * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (table, head) in zip(axes, panels):
        if head is None:
            _draw_profile(ax, table)
        else:
            _draw_grid(fig, ax, table, head)
    for ax in axes[len(panels) :]:
        ax.axis("off")
    what = "L2 norm over head_dim" if tables[0].mode == "ctx" else "bias value"
    fig.suptitle(f"{spec}: encoder iRPE tables ({what}) of {Path(name).name}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def _draw_grid(fig, ax, table: IRPETable, head: int) -> None:
    grid = table.grid()[head].numpy()
    half = (table.side - 1) // 2
    extent = (-half - 0.5, half + 0.5, -half - 0.5, half + 0.5)
    if table.mode == "bias":
        limit = float(abs(grid).max()) or 1.0
        image = ax.imshow(grid, origin="lower", extent=extent, cmap="RdBu_r",
                          vmin=-limit, vmax=limit)
    else:
        image = ax.imshow(grid, origin="lower", extent=extent, cmap="viridis")
    fig.colorbar(image, ax=ax, shrink=0.85)
    ticks = range(-half, half + 1, max(1, half // 3))
    ax.set_xticks(list(ticks))
    ax.set_yticks(list(ticks))
    ax.set_xlabel("column offset bucket")
    ax.set_ylabel("row offset bucket")
    suffix = f" head {head}" if table.heads > 1 else (" (shared)" if table.heads == 1 else "")
    ax.set_title(table.name + suffix)


def _draw_profile(ax, table: IRPETable) -> None:
    half = (table.side - 1) // 2
    xs = list(range(-half, half + 1))
    for head in range(table.heads):
        label = f"head {head}" if table.heads > 1 else None
        ax.plot(xs, table.values[head].numpy(), "-o", markersize=3, label=label)
    if table.heads > 1:
        ax.legend(fontsize="small", ncol=2)
    axis = {"rows": "row offset", "cols": "column offset"}.get(table.part, "distance")
    ax.set_xlabel(f"bucket ({axis} index g, 0 = zero offset)")
    ax.set_ylabel("L2 norm" if table.mode == "ctx" else "bias")
    ax.set_title(table.name)
    ax.grid(alpha=0.3)
