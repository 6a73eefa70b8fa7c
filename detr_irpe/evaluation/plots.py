"""PNG pictures of an evaluation: precision-recall curves and the confusion matrix.

matplotlib is imported inside the functions and drawn through its Agg canvas (no
``pyplot``, no global backend switch).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from detr_irpe.evaluation.confusion import ConfusionMatrix
from detr_irpe.evaluation.per_category import precision_curve

PR_IOUS = (0.5, 0.75)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_pr_curves(coco_eval, category_names: dict[int, str], path: str | Path,
                   title: str = "") -> None:
    """One panel per category with ground truth: COCOeval's interpolated precision against
    recall at IoU 0.5 and 0.75 (area all, 100 detections), the AP of each in the legend."""
    curves = {}
    for cat_id in coco_eval.params.catIds:
        per_iou = {iou: precision_curve(coco_eval, iou, int(cat_id)) for iou in PR_IOUS}
        if all(c is not None for c in per_iou.values()):
            curves[int(cat_id)] = per_iou
    cols = max(1, min(6, math.ceil(math.sqrt(len(curves)))))
    rows = max(1, math.ceil(len(curves) / cols))
    fig = _figure(2.6 * cols, 2.4 * rows + 0.4)
    fig.suptitle(f"precision-recall per category {title}\n(area all, 100 detections)", fontsize=10)
    for n, (cat_id, per_iou) in enumerate(curves.items()):
        ax = fig.add_subplot(rows, cols, n + 1)
        for iou, (recall, precision) in per_iou.items():
            ax.plot(recall, precision, label=f"IoU {iou:.2f}: AP {100 * np.mean(precision):.1f}")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), title=category_names.get(cat_id, str(cat_id)))
        ax.set_xlabel("recall", fontsize=8)
        ax.set_ylabel("precision", fontsize=8)
        ax.legend(fontsize=7, loc="best")
    if not curves:
        fig.text(0.5, 0.5, "no category has ground truth", ha="center")
    fig.savefig(path, dpi=80)


def plot_confusion(matrix: ConfusionMatrix, category_names: dict[int, str], path: str | Path,
                   title: str = "") -> None:
    """The counts as a heat map (log colour scale), each cell labelled with its count."""
    from matplotlib.colors import LogNorm

    labels = [category_names.get(c, str(c)) for c in matrix.category_ids]
    size = len(labels) + 1
    side = max(4.0, 0.45 * size + 2.5)
    fig = _figure(side, side)
    ax = fig.add_subplot(1, 1, 1)
    counts = matrix.counts
    top = max(2, int(counts.max()))
    ax.imshow(np.where(counts > 0, counts, np.nan), cmap="Blues", norm=LogNorm(vmin=0.5, vmax=top))
    ax.set_xticks(range(size), labels + ["background"], rotation=90)
    ax.set_yticks(range(size), labels + ["missed"])
    ax.set_xlabel("true category")
    ax.set_ylabel("predicted category")
    ax.set_title(f"confusion matrix {title}\nscore >= {matrix.score_threshold:g}, IoU >= "
                 f"{matrix.iou_threshold:g}", fontsize=10)
    if size <= 30:
        for (i, j), value in np.ndenumerate(counts):
            if value:
                dark = np.log(value / 0.5) > 0.6 * np.log(top / 0.5)
                ax.text(j, i, str(value), ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
    fig.savefig(path, dpi=80)
