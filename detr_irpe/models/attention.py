"""Multi-head attention with optional iRPE, for DETR's encoder self-attention.

Parameter names are those of ``torch.nn.MultiheadAttention`` (``in_proj_weight`` with
rows ordered q, k, v, ``in_proj_bias``, ``out_proj``) plus the iRPE tables ``rpe_q``,
``rpe_k``, ``rpe_v`` (docs/irpe.md section 5), so official checkpoints load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fused_attention import fused_attention
from .irpe import IRPEConfig, RelativePositionTable, build_tables

BACKENDS = ("auto", "fused", "sdpa", "explicit")


class IRPEMultiheadAttention(nn.Module):
    """Sequence-first multi-head attention, (L, B, E) in and out, like DETR calls it.

    logits = (s q) k^T + RPE_K + RPE_Q;  key padding -> -inf;  softmax;  dropout;
    out = attn v + RPE_V;  then ``out_proj``.  With ``irpe=None`` this is exactly
    ``nn.MultiheadAttention`` (without its rarely used options).

    ``backend``:

    - ``"fused"``: :mod:`.fused_attention`, the iRPE-K table lookup folded into the
      attention's own forward/backward; for plain attention and contextual iRPE on keys
      (the paper's detector) with product, euc or quant buckets;
    - ``"sdpa"``: the iRPE terms and the padding go to ``F.scaled_dot_product_attention``
      as one additive mask (memory-efficient kernels on CUDA); not for RPE_V;
    - ``"explicit"``: attention written out with autograd (any configuration);
    - ``"auto"`` (default): fused for training on CPU where it applies; otherwise sdpa,
      or explicit for iRPE on values.

    All backends compute the same function (tests compare each with a float64 reference).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        irpe: IRPEConfig | None = None,
        backend: str = "auto",
    ):
        super().__init__()  # embed_dim % num_heads == 0: checked by DETRConfig (hidden_dim, nheads)
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r} not in {BACKENDS}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = self.head_dim**-0.5
        self.dropout = dropout
        self.irpe = irpe
        self.backend = backend
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        for name, table in build_tables(irpe, self.head_dim, num_heads).items():
            self.add_module(name, table)
        self._reset_parameters()

    def _reset_parameters(self):
        # The same initialisation as nn.MultiheadAttention.
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def _split_heads(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        # (L, B, E) -> (B, H, L, d)
        L, B, _ = x.shape
        return F.linear(x, weight, bias).view(L, B, self.num_heads, self.head_dim).permute(
            1, 2, 0, 3
        )

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        hw: tuple[int, int] | None = None,
        blocked: Tensor | None = None,
    ) -> Tensor:
        """query, key, value: (L, B, E); key_padding_mask: bool (B, L), True on padding;
        hw: the (h, w) feature map the L = h * w tokens come from (needed with iRPE);
        blocked: bool (B, Lq, Lk), True where a query may not attend a key (any backend
        but the fused one, which ``auto`` then leaves).  Returns (L, B, E)."""
        rpe_q, rpe_k, rpe_v = (getattr(self, f"rpe_{x}", None) for x in "qkv")
        has_rpe = any(t is not None for t in (rpe_q, rpe_k, rpe_v))
        h, w = self._grid(query, key, hw) if has_rpe else (0, 0)
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q = self._split_heads(query, w_q, b_q) * self.scale  # (B, H, Lq, d), scaled
        k = self._split_heads(key, w_k, b_k)  # (B, H, Lk, d)
        v = self._split_heads(value, w_v, b_v)  # (B, H, Lk, d)
        p = self.dropout if self.training else 0.0
        fusable = rpe_q is None and rpe_v is None and (
            rpe_k is None or (isinstance(rpe_k, RelativePositionTable) and rpe_k.cfg.mode == "ctx")
        )
        backend = self._backend(q, fusable and blocked is None, rpe_v is not None)
        if blocked is not None:  # padded keys are blocked keys
            key_padding_mask = blocked if key_padding_mask is None else (
                blocked | key_padding_mask[:, None, :])
        if backend == "fused":
            table, ids = rpe_k.context_table(q, h, w) if rpe_k is not None else (None, None)
            out = fused_attention(q, k, v, table, ids, key_padding_mask, p)
        else:
            extra = self._logit_terms(q, k, h, w)  # (B or 1, H or 1, Lq, Lk) or None
            if backend == "sdpa":
                out = F.scaled_dot_product_attention(
                    q, k, v, attn_mask=_sdpa_mask(extra, key_padding_mask, q), dropout_p=p,
                    scale=1.0)
            else:
                out = self._explicit(q, k, v, extra, key_padding_mask, p, h, w)
        Lq, B = query.shape[:2]
        return self.out_proj(out.permute(2, 0, 1, 3).reshape(Lq, B, self.embed_dim))

    def mean_weights(self, query: Tensor, key: Tensor,
                     key_padding_mask: Tensor | None = None) -> Tensor:
        """The attention weights of plain attention (no iRPE, no dropout) averaged over the
        heads, (B, Lq, Lk), computed in float32 from the same projections as
        :meth:`forward`; query (Lq, B, E), key (Lk, B, E)."""
        w_q, w_k, _ = self.in_proj_weight.chunk(3)
        b_q, b_k, _ = self.in_proj_bias.chunk(3)
        q = self._split_heads(query, w_q, b_q) * self.scale
        k = self._split_heads(key, w_k, b_k)
        logits = (q @ k.transpose(-2, -1)).float()  # (B, H, Lq, Lk)
        if key_padding_mask is not None:
            logits = logits.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        return logits.softmax(dim=-1).mean(dim=1)

    @staticmethod
    def _grid(query: Tensor, key: Tensor, hw: tuple[int, int] | None) -> tuple[int, int]:
        if hw is None or hw[0] * hw[1] != query.shape[0] or query.shape[0] != key.shape[0]:
            raise ValueError(
                f"iRPE self-attention needs hw=(h, w) with h * w = sequence length; "
                f"got hw={hw} for query length {query.shape[0]}, key length {key.shape[0]}"
            )
        return hw

    def _backend(self, q: Tensor, fusable: bool, on_values: bool) -> str:
        """``auto``: the fused path to train on CPU (no separate L x L bias tensor and
        gradient); otherwise SDPA, faster in CPU inference (docs/benchmarks.md, "Backend
        choice") and with memory-efficient GPU kernels."""
        backend = self.backend
        if backend == "auto":
            if fusable and q.device.type == "cpu" and self.training and torch.is_grad_enabled():
                return "fused"
            return "explicit" if on_values else "sdpa"
        if backend == "fused" and not fusable:
            raise ValueError("backend 'fused' handles plain attention and ctx iRPE on keys "
                             "(product/euc/quant) only; use 'explicit' or 'auto'")
        if backend == "sdpa" and on_values:
            raise ValueError("backend 'sdpa' cannot compute iRPE on values; use 'explicit'")
        return backend

    def _logit_terms(self, q: Tensor, k: Tensor, h: int, w: int) -> Tensor | None:
        """The iRPE terms added to the logits: on keys, and on queries (transposed)."""
        rpe_q, rpe_k = getattr(self, "rpe_q", None), getattr(self, "rpe_k", None)
        extra = rpe_k.logits(q, h, w) if rpe_k is not None else None
        if rpe_q is not None:
            term = rpe_q.logits(k * self.scale, h, w).transpose(-2, -1)
            extra = term if extra is None else extra + term
        return extra

    def _explicit(self, q, k, v, extra, key_padding_mask, p: float, h: int, w: int) -> Tensor:
        """Attention written out, the only path for iRPE on values.  Returns (B, H, Lq, d)."""
        logits = q @ k.transpose(-2, -1)  # (B, H, Lq, Lk)
        if extra is not None:
            logits = logits + extra
        if key_padding_mask is not None:
            logits = logits.masked_fill(_per_head(key_padding_mask), float("-inf"))
        attn = F.dropout(logits.softmax(dim=-1), p=p, training=self.training)
        out = attn @ v
        rpe_v = getattr(self, "rpe_v", None)
        return out + rpe_v.values(attn, h, w) if rpe_v is not None else out

    def extra_repr(self) -> str:
        irpe = self.irpe.to_string() if self.irpe else "off"
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, irpe={irpe}"


def _per_head(mask: Tensor) -> Tensor:
    """A key padding mask (B, Lk) or a blocked mask (B, Lq, Lk) -> broadcastable over the
    heads and queries of (B, H, Lq, Lk) logits."""
    return mask[:, None, None, :] if mask.dim() == 2 else mask[:, None]


def _sdpa_mask(extra: Tensor | None, key_padding_mask: Tensor | None, q: Tensor) -> Tensor | None:
    """SDPA's ``attn_mask``: the iRPE logit terms with padded keys at -inf, or a boolean
    mask (True = may attend) without iRPE; None when nothing is masked."""
    if key_padding_mask is None or (q.device.type == "cpu" and not bool(key_padding_mask.any())):
        return extra  # (on GPUs the any() check is skipped: it would synchronise)
    pad = _per_head(key_padding_mask)
    if extra is None:
        return ~pad
    if extra.shape[0] == pad.shape[0] and extra.shape[1] == q.shape[1]:
        # Our own fresh (B, H, L, L) tensor (a gather's output, whose backward does not
        # need it): mask in place instead of a second L x L tensor.
        return extra.masked_fill_(pad, float("-inf"))
    return extra.masked_fill(pad, float("-inf"))
