"""The learned iRPE tables of a checkpoint's encoder: read out of its state dict
(:func:`irpe_tables`) and drawn as heat maps (product method) or per-bucket profiles
(:func:`plot_irpe_tables`, ``tools/visualize_rpe.py``).

matplotlib is imported inside the plotting function and drawn through its Agg canvas
directly (no ``pyplot``, no global backend switch), so importing this module costs nothing
and works without a display.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from detr_irpe.checkpoint import Checkpoint, load_checkpoint
from detr_irpe.models.irpe import IRPEConfig

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
