"""DETR's encoder-decoder transformer; the encoder self-attention carries iRPE.

Sequence-first layout throughout: (L, B, D).  Post-norm by default, ``pre_norm``
optional (then the encoder ends with a LayerNorm, as in DETR).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import IRPEMultiheadAttention
from .irpe_config import IRPEConfig

# How the iRPE tables start: "xavier" (the official run, the default) or "zero" (a fresh
# model computes plain DETR).


def _with_pos(x: Tensor, pos: Tensor | None) -> Tensor:
    return x if pos is None else x + pos


class EncoderLayer(nn.Module):
    def __init__(self, d_model, nhead, dim_feedforward, dropout, pre_norm, irpe):
        super().__init__()
        self.self_attn = IRPEMultiheadAttention(d_model, nhead, dropout=dropout, irpe=irpe)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def _ffn(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))

    def forward(self, src, key_padding_mask, pos, hw):
        if self.pre_norm:
            x = self.norm1(src)
            qk = _with_pos(x, pos)
            src = src + self.dropout1(self.self_attn(qk, qk, x, key_padding_mask, hw))
            return src + self.dropout2(self._ffn(self.norm2(src)))
        qk = _with_pos(src, pos)
        src = self.norm1(src + self.dropout1(self.self_attn(qk, qk, src, key_padding_mask, hw)))
        return self.norm2(src + self.dropout2(self._ffn(src)))


class DecoderLayer(nn.Module):
    def __init__(self, d_model, nhead, dim_feedforward, dropout, pre_norm):
        super().__init__()
        self.self_attn = IRPEMultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = IRPEMultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def _ffn(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))

    def forward(self, tgt, memory, memory_key_padding_mask, pos, query_pos, weights=None,
                blocked=None):
        """``weights``: a list to append the cross-attention weights to (head mean,
        (B, Q, HW)); None (the default) computes none.  ``blocked``: bool (B, Q, Q), True
        where a query may not attend another in the self-attention; None: all may."""
        mem_k = _with_pos(memory, pos)
        if self.pre_norm:
            x = self.norm1(tgt)
            qk = _with_pos(x, query_pos)
            tgt = tgt + self.dropout1(self.self_attn(qk, qk, x, blocked=blocked))
            query = _with_pos(self.norm2(tgt), query_pos)
            attn = self.multihead_attn(query, mem_k, memory, memory_key_padding_mask)
            tgt = tgt + self.dropout2(attn)
            out = tgt + self.dropout3(self._ffn(self.norm3(tgt)))
        else:
            qk = _with_pos(tgt, query_pos)
            tgt = self.norm1(tgt + self.dropout1(self.self_attn(qk, qk, tgt, blocked=blocked)))
            query = _with_pos(tgt, query_pos)
            attn = self.multihead_attn(query, mem_k, memory, memory_key_padding_mask)
            tgt = self.norm2(tgt + self.dropout2(attn))
            out = self.norm3(tgt + self.dropout3(self._ffn(tgt)))
        if weights is not None:
            weights.append(self.multihead_attn.mean_weights(query, mem_k, memory_key_padding_mask))
        return out


class TransformerEncoder(nn.Module):
    def __init__(self, layer: EncoderLayer, num_layers: int, norm: nn.Module | None):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = norm

    def forward(self, src, key_padding_mask, pos, hw):
        for layer in self.layers:
            src = layer(src, key_padding_mask, pos, hw)
        return src if self.norm is None else self.norm(src)


class TransformerDecoder(nn.Module):
    def __init__(self, layer: DecoderLayer, num_layers: int, norm: nn.Module):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = norm

    def forward(self, tgt, memory, memory_key_padding_mask, pos, query_pos,
                weights=None, blocked=None) -> Tensor:
        """Returns the normed output of every layer, (num_layers, Q, B, D); ``weights``: a
        list that receives every layer's head-mean cross-attention (B, Q, HW); ``blocked``:
        the self-attention's (:class:`DecoderLayer`)."""
        outputs = []
        for layer in self.layers:
            tgt = layer(tgt, memory, memory_key_padding_mask, pos, query_pos, weights, blocked)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs)


class Transformer(nn.Module):
    def __init__(
        self,
        d_model: int,
        nhead: int,
        num_encoder_layers: int,
        num_decoder_layers: int,
        dim_feedforward: int,
        dropout: float,
        pre_norm: bool,
        irpe: IRPEConfig | None,
        irpe_init: str,
    ):
        """The values are checked by :class:`~detr_irpe.models.config.DETRConfig`."""
        super().__init__()
        enc = EncoderLayer(d_model, nhead, dim_feedforward, dropout, pre_norm, irpe)
        self.encoder = TransformerEncoder(
            enc, num_encoder_layers, nn.LayerNorm(d_model) if pre_norm else None
        )
        dec = DecoderLayer(d_model, nhead, dim_feedforward, dropout, pre_norm)
        self.decoder = TransformerDecoder(dec, num_decoder_layers, nn.LayerNorm(d_model))
        self.d_model = d_model
        self.nhead = nhead
        self._reset_parameters(irpe_init)

    def _reset_parameters(self, irpe_init: str):
        # DETR: Xavier-uniform on every parameter of more than one dimension, the iRPE
        # tables included, as the official run has it (docs/irpe.md section 6).  "zero"
        # then clears the tables, so that a fresh model computes plain DETR.
        for name, p in self.named_parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
            if irpe_init == "zero" and ".rpe_" in name:
                nn.init.zeros_(p)

    def forward(self, src, mask, query_embed, pos_embed, weights=None,
                content_points=None, denoising=None,
                denoising_pos=None) -> tuple[Tensor, Tensor]:
        """src: (B, D, h, w); mask: bool (B, h, w); query_embed: (Q, D); pos: (B, D, h, w);
        ``weights``: a list that receives each decoder layer's head-mean cross-attention,
        (B, Q, h * w) (training aid; None computes none); ``content_points``: (Q, 2) points
        (x, y) in [0, 1] of each image's own extent, where the queries' decoder input is
        read off the encoder output (:func:`sample_at_points`); None: zeros, as DETR;
        ``denoising``: a :class:`~detr_irpe.models.denoising.DenoisingQueries` (training
        aid, with ``content_points``): its N queries follow the Q, read off the encoder
        output at their points, with the positions ``denoising_pos`` (B, N, D), or where
        that is None those of their ``owners``.

        Returns decoder outputs (num_dec_layers, B, Q [+ N], D) and memory (B, D, h, w).
        """
        B, D, h, w = src.shape
        src = src.flatten(2).permute(2, 0, 1)  # (hw, B, D)
        pos = pos_embed.flatten(2).permute(2, 0, 1)
        query_pos = query_embed.unsqueeze(1).expand(-1, B, -1)  # (Q, B, D)
        mask = mask.flatten(1)
        memory = self.encoder(src, mask, pos, (h, w))
        grid = memory.permute(1, 2, 0).view(B, D, h, w)
        tgt = (torch.zeros_like(query_pos) if content_points is None
               else sample_at_points(grid, mask.view(B, h, w), content_points))
        blocked = None
        if denoising is not None:
            tgt = torch.cat([tgt, sample_at_points(grid, mask.view(B, h, w), denoising.points)])
            extra = query_embed[denoising.owners] if denoising_pos is None else denoising_pos
            query_pos = torch.cat([query_pos, extra.transpose(0, 1)])
            blocked = denoising.blocked
        hs = self.decoder(tgt, memory, mask, pos, query_pos, weights, blocked)
        return hs.transpose(1, 2), grid


def sample_at_points(features: Tensor, mask: Tensor, points: Tensor) -> Tensor:
    """features (B, D, h, w) read at points (Q, 2) or per image (B, Q, 2), (x, y) in [0, 1]
    of each image's own (unpadded) extent, by bilinear interpolation between cell centres
    -> (Q, B, D).
    ``mask``: bool (B, h, w), True on padding (which lies right of and below the image)."""
    B, _, h, w = features.shape
    width = (~mask[:, 0, :]).sum(-1).to(features)  # cells the image covers
    height = (~mask[:, :, 0]).sum(-1).to(features)
    x = points[..., 0] * width[:, None] / w  # (B, Q), in [0, 1] of the padded map
    y = points[..., 1] * height[:, None] / h
    grid = torch.stack([x, y], dim=-1).unsqueeze(2) * 2 - 1  # (B, Q, 1, 2) in [-1, 1]
    return F.grid_sample(features, grid, align_corners=False).squeeze(3).permute(2, 0, 1)
