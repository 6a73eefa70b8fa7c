"""Training curves of one or more runs from their ``log.txt``: loss terms, class error, AP and
AP50 per epoch (``tools/plot_logs.py`` and the end of a training run).

matplotlib is imported inside the plotting function and drawn through its Agg canvas
directly (no ``pyplot``, no global backend switch), so importing this module costs nothing
and works without a display.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

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
