"""Image relative position encoding (iRPE), as defined in ``docs/irpe.md``.

Two layers, from pure functions to modules (the configuration string is parsed in
:mod:`.irpe_config`):

1. :func:`piecewise_index`, :func:`bucket_ids` and :func:`bucket_map` -- pure functions
   of ``(h, w, method, ratio)`` giving the bucket of every (query, key) token pair on an
   ``h x w`` feature map (tokens row-major).  :func:`bucket_map` is cached per shape.
2. :class:`RelativePositionTable` (one table, attached to q, k or v) and
   :class:`CrossRelativePositionTable` (row table + column table for ``cross``).

The two primitives that touch an ``L x L`` map are :func:`lookup` (table values per
bucket -> per token pair, a gather) and its transpose :func:`aggregate` (per token pair
-> per bucket, a scatter-add).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .irpe_config import IRPEConfig

# ----------------------------------------------------------------------------------------
# Bucket maps: pure functions of (h, w, method, ratio).


@torch.no_grad()
def piecewise_index(x: Tensor, alpha: float, beta: float, gamma: float) -> Tensor:
    """g(x) of paper Eq. 18, elementwise, as int64 in [-int(beta), int(beta)].

    |x| <= alpha keeps round(x); beyond, the distance is compressed logarithmically
    (float32 logs, round-half-to-even, clipped at beta), then truncated toward zero.
    """
    x_abs = x.abs()
    near = x_abs <= alpha
    far_value = alpha + torch.log(x_abs.float() / alpha) / math.log(gamma / alpha) * (
        beta - alpha
    )
    far = torch.sign(x).float() * far_value.round().clamp(max=beta)
    near_value = x.round() if x.is_floating_point() else x
    return torch.where(near, near_value.to(torch.float64), far.to(torch.float64)).to(torch.long)


def _grid_offsets(h: int, w: int) -> tuple[Tensor, Tensor]:
    """(L, L) row and column offsets (query minus key), tokens row-major."""
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    return rows[:, None] - rows[None, :], cols[:, None] - cols[None, :]


@torch.no_grad()
def bucket_ids(method: str, ratio: float, h: int, w: int) -> Tensor:
    """Bucket id of every (query i, key j) pair: int64 (L, L), L = h * w.

    ``method`` is one of euc, quant, product, cross_rows, cross_cols (the two halves
    of cross).  Ids lie in ``[0, num_buckets)``.
    """
    cfg = IRPEConfig(ratio=ratio)  # alpha, beta, gamma and B from the ratio alone
    a, b, g, bint = cfg.alpha, cfg.beta, cfg.gamma, cfg.beta_int
    dr, dc = _grid_offsets(h, w)
    if method == "euc":
        dist = (dr * dr + dc * dc).float().sqrt().round()
        return piecewise_index(dist, a, b, g) + bint
    if method == "quant":
        return piecewise_index(dr * dr + dc * dc, a, b, g) + bint
    if method == "cross_rows":
        return piecewise_index(dr, a, b, g) + bint
    if method == "cross_cols":
        return piecewise_index(dc, a, b, g) + bint
    if method == "product":
        side = 2 * bint + 1
        return (piecewise_index(dr, a, b, g) + bint) * side + piecewise_index(dc, a, b, g) + bint
    raise ValueError(f"unknown bucket method {method!r}")


@dataclass(frozen=True)
class BucketMap:
    """Everything a lookup needs for one (method, ratio, h, w, device).

    ids: int64 (L, L) bucket ids, L = h * w.
    """

    ids: Tensor
    h: int
    w: int
    num_buckets: int


BUCKET_CACHE_SIZE = 64


@functools.lru_cache(maxsize=BUCKET_CACHE_SIZE)
def bucket_map(
    method: str, ratio: float, h: int, w: int, device: torch.device
) -> BucketMap:
    """Cached :class:`BucketMap`; shared by every layer and every table of a model.

    The cache holds at most ``BUCKET_CACHE_SIZE`` maps.  One map costs 8 * L^2 bytes
    (int64 ids): 7.2 MB at DETR's typical 25 x 38 map, so at most about 0.5 GB in the
    unlikely case of 64 distinct large shapes; clear with ``bucket_map.cache_clear()``.
    """
    # Normal tensors even when first asked for under torch.inference_mode(): the cached
    # map is shared with training, where autograd must be able to save it.
    side = 2 * int(2 * ratio) + 1
    num_buckets = side * side if method == "product" else side
    with torch.inference_mode(False):
        return BucketMap(bucket_ids(method, ratio, h, w).to(device), h, w, num_buckets)


# ----------------------------------------------------------------------------------------
# lookup / aggregate: the only L x L operations.


def lookup(table: Tensor, bmap: BucketMap) -> Tensor:
    """out[..., i, j] = table[..., i, bucket(i, j)].

    table: (..., L, n_buckets) -> (..., L, L).
    """
    L = bmap.h * bmap.w
    return torch.gather(table, -1, bmap.ids.expand(*table.shape[:-2], L, L))


def aggregate(weights: Tensor, bmap: BucketMap) -> Tensor:
    """out[..., i, n] = sum of weights[..., i, j] over keys j with bucket(i, j) = n.

    weights: (..., L, L) -> (..., L, n_buckets).  The transpose of :func:`lookup`.
    """
    out = weights.new_zeros(*weights.shape[:-1], bmap.num_buckets)
    return out.scatter_add(-1, bmap.ids.expand(weights.shape), weights)


# ----------------------------------------------------------------------------------------
# Modules.


class RelativePositionTable(nn.Module):
    """One iRPE table attached to queries, keys or values.

    Parameter names follow the official checkpoints: ``lookup_table_weight`` of shape
    (H', head_dim, n_buckets) for ctx on q/k, (H', n_buckets, head_dim) for ctx on v,
    ``lookup_table_bias`` (H', n_buckets) for bias.  H' = 1 when shared across heads.
    Tables are created at zero, as the official module does; the transformer that holds
    them decides their initial values (:class:`~detr_irpe.models.transformer.Transformer`).
    """

    def __init__(
        self, cfg: IRPEConfig, head_dim: int, num_heads: int, on_value: bool, method: str
    ):
        super().__init__()
        self.cfg = cfg
        self.method = method  # euc, quant, product, cross_rows or cross_cols
        self.on_value = on_value
        heads = 1 if cfg.shared_head else num_heads
        n = cfg.side**2 if method == "product" else cfg.side
        if cfg.mode == "bias":
            self.lookup_table_bias = nn.Parameter(torch.zeros(heads, n))
        elif on_value:
            self.lookup_table_weight = nn.Parameter(torch.zeros(heads, n, head_dim))
        else:
            self.lookup_table_weight = nn.Parameter(torch.zeros(heads, head_dim, n))

    def _map(self, h: int, w: int, like: Tensor) -> BucketMap:
        return bucket_map(self.method, self.cfg.ratio, h, w, like.device)

    def logits(self, x: Tensor, h: int, w: int) -> Tensor:
        """Term added to the attention logits (for q/k tables).

        x: (B, H, L, d), already scaled (s*q for a key table, s*k for a query table).
        Returns out[b, h, i, j] = x[b, h, i] . W[h', :, bucket(i, j)]  (ctx)
        or B[h', bucket(i, j)] (bias, shape (1, H', L, L)).
        """
        bmap = self._map(h, w, x)
        if self.cfg.mode == "bias":
            return self.lookup_table_bias[:, bmap.ids].unsqueeze(0)  # (1, H', L, L)
        table = torch.matmul(x, self.lookup_table_weight.unsqueeze(0))  # (B, H, L, n)
        return lookup(table, bmap)

    def context_table(self, x: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
        """For ctx mode: T = x W, (B, H, L, n_buckets), and the (L, L) bucket ids, so that
        the logits term is ``gather(T, -1, ids)`` (what :meth:`logits` computes)."""
        return torch.matmul(x, self.lookup_table_weight.unsqueeze(0)), self._map(h, w, x).ids

    def values(self, attn: Tensor, h: int, w: int) -> Tensor:
        """Term added to the attention output (for the v table).

        attn: (B, H, L, L) attention after softmax and dropout.
        Returns out[b, h, i] = sum_j attn[b, h, i, j] * W[h', bucket(i, j), :], (B, H, L, d).
        """
        per_bucket = aggregate(attn, self._map(h, w, attn))  # (B, H, L, n)
        return torch.matmul(per_bucket, self.lookup_table_weight.unsqueeze(0))


class CrossRelativePositionTable(nn.Module):
    """``cross`` method: a row table and a column table whose terms are summed."""

    def __init__(self, cfg: IRPEConfig, head_dim: int, num_heads: int, on_value: bool):
        super().__init__()
        self.rp_rows = RelativePositionTable(cfg, head_dim, num_heads, on_value, "cross_rows")
        self.rp_cols = RelativePositionTable(cfg, head_dim, num_heads, on_value, "cross_cols")

    def logits(self, x: Tensor, h: int, w: int) -> Tensor:
        return self.rp_rows.logits(x, h, w) + self.rp_cols.logits(x, h, w)

    def values(self, attn: Tensor, h: int, w: int) -> Tensor:
        return self.rp_rows.values(attn, h, w) + self.rp_cols.values(attn, h, w)


def build_tables(
    cfg: IRPEConfig | None, head_dim: int, num_heads: int
) -> dict[str, nn.Module]:
    """The tables named ``rpe_q``, ``rpe_k``, ``rpe_v`` for the configured positions."""
    if cfg is None:
        return {}
    tables = {}
    for where in "qkv":
        if where not in cfg.rpe_on:
            continue
        on_value = where == "v"
        if cfg.method == "cross":
            tables[f"rpe_{where}"] = CrossRelativePositionTable(cfg, head_dim, num_heads, on_value)
        else:
            tables[f"rpe_{where}"] = RelativePositionTable(
                cfg, head_dim, num_heads, on_value, cfg.method
            )
    return tables
