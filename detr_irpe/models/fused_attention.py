"""Attention with the iRPE-K term folded in, forward and backward written out.

    logits = gather(T, bucket) + q k^T      (one buffer: the gather writes it, the matmul
                                             accumulates into it)
    attn   = dropout(softmax(masked logits))
    out    = attn v

T = (s q) W is the (B, H, L, n_buckets) table of docs/irpe.md section 7.  The backward
reuses the one d_logits buffer for dq, dk and, through a single scatter-add into the
(B, H, L, n_buckets) bins, for dT.  Compared with plain attention of the same code, iRPE-K
adds one gather in the forward and one scatter-add in the backward, and no L x L
temporary: autograd's generic path would keep a separate bias tensor and its gradient.

Dropout draws its keep-mask as 16-bit integers (:func:`dropout_keep_mask`), faster on the
CPU than ``native_dropout``'s float draw; the distribution is the same.

Without a table the same function is plain attention, so plain and iRPE-K are measured
with the same kernel (``benchmarks/speed.py``; figures in docs/benchmarks.md).  Pure
PyTorch: runs on any device.
"""

from __future__ import annotations

import torch
from torch import Tensor


class FusedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, table, ids, pad, p):
        """q: (B, H, L, d), already scaled; k, v: (B, H, S, d); table: (B, H, L, n) or
        None; ids: int64 (L, S) bucket ids or None; pad: bool (B, S), True on padding, or
        None; p: dropout probability (0 in eval).  Returns (B, H, L, d)."""
        B, H, L, d = q.shape
        S = k.shape[2]
        q3 = q.reshape(B * H, L, d)
        k3 = k.reshape(B * H, S, d)
        v3 = v.reshape(B * H, S, d)
        if table is not None:
            logits = torch.gather(table, -1, ids.expand(B, H, L, S)).view(B * H, L, S)
            logits.baddbmm_(q3, k3.transpose(1, 2))
        else:
            logits = torch.bmm(q3, k3.transpose(1, 2))
        if pad is not None:
            logits.view(B, H, L, S).masked_fill_(pad[:, None, None, :], float("-inf"))
        attn = logits.softmax(-1)
        del logits
        if p > 0:
            keep = dropout_keep_mask(attn.shape, p, attn.device)
            dropped = torch.mul(attn, keep).mul_(1.0 / (1.0 - p))
        else:
            dropped, keep = attn, None
        out = torch.bmm(dropped, v3)
        ctx.save_for_backward(q3, k3, v3, attn, dropped, keep, ids)
        ctx.shape = (B, H, L, S, d)
        ctx.p = p
        ctx.table_shape = None if table is None else table.shape
        return out.view(B, H, L, d)

    @staticmethod
    def backward(ctx, dout):
        q3, k3, v3, attn, dropped, keep, ids = ctx.saved_tensors
        B, H, L, S, d = ctx.shape
        dout3 = dout.reshape(B * H, L, d)
        dv = torch.bmm(dropped.transpose(1, 2), dout3)
        grad = torch.bmm(dout3, v3.transpose(1, 2))  # d(dropped attention), (BH, L, S)
        if keep is not None:
            grad.mul_(keep).mul_(1.0 / (1.0 - ctx.p))
        # Softmax backward, in place: attn * (g - sum(g * attn)).
        dot = (grad * attn).sum(-1, keepdim=True)
        grad.sub_(dot).mul_(attn)  # now d_logits; zero on padded keys
        dq = torch.bmm(grad, k3)
        dk = torch.bmm(grad.transpose(1, 2), q3)
        dtable = None
        if ctx.table_shape is not None and ctx.needs_input_grad[3]:
            dtable = grad.new_zeros(ctx.table_shape)
            dtable.scatter_add_(-1, ids.expand(B, H, L, S), grad.view(B, H, L, S))
        return (dq.view(B, H, L, d), dk.view(B, H, S, d), dv.view(B, H, S, d), dtable,
                None, None, None)


def dropout_keep_mask(shape, p: float, device) -> Tensor:
    """Dropout's keep-mask for ``shape`` as 0/1 int16 values: each element kept with
    probability 1 - p, p rounded to a multiple of 1/65536, drawn from torch's generator as
    one 16-bit integer per element (on the CPU about 1.6x faster than ``native_dropout``'s
    float Bernoulli draw, which takes a tenth of a DETR-R50 training step)."""
    threshold = round(p * 65536) - 32768
    return torch.empty(shape, dtype=torch.int16, device=device).random_(-32768, 32768).ge_(threshold)


def fused_attention(
    q: Tensor, k: Tensor, v: Tensor, table: Tensor | None = None, ids: Tensor | None = None,
    key_padding_mask: Tensor | None = None, dropout_p: float = 0.0,
) -> Tensor:
    """See :class:`FusedAttention`.  Computes in the query's dtype (under autocast, the
    half type of the projections): autocast would run the softmax in float32 on CUDA, and
    the hand-written backward would then mix float32 and half operands."""
    with torch.autocast(q.device.type, enabled=False):
        k, v = k.to(q.dtype), v.to(q.dtype)
        table = None if table is None else table.to(q.dtype)
        return FusedAttention.apply(q, k, v, table, ids, key_padding_mask, dropout_p)
