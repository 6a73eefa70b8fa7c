"""Position embeddings of the feature map: DETR's "sine" (default) and "learned"."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class PositionEmbeddingSine(nn.Module):
    """Fixed 2D sine embedding.

    y/x are cumulative sums over *unpadded* pixels, normalised to (0, scale]; each half
    of the channels interleaves sin (even) and cos (odd) frequencies.  Output channels
    are [pos_y, pos_x], (B, 2 * num_pos_feats, H, W).
    """

    def __init__(
        self,
        num_pos_feats: int,
        temperature: float = 10000,
        normalize: bool = True,
        scale: float = 2 * math.pi,
    ):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale

    def forward(self, mask: Tensor) -> Tensor:
        """mask: bool (B, H, W), True on padding."""
        not_mask = ~mask
        y = not_mask.cumsum(1, dtype=torch.float32)
        x = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            y = y / (y[:, -1:, :] + eps) * self.scale
            x = x / (x[:, :, -1:] + eps) * self.scale
        pos_x = sine_channels(x, self.num_pos_feats, self.temperature)  # (B, H, W, F)
        pos_y = sine_channels(y, self.num_pos_feats, self.temperature)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def sine_channels(coords: Tensor, num_feats: int, temperature: float = 10000) -> Tensor:
    """coords (...) -> (..., num_feats): sin (even channels) and cos (odd) of ``coords``
    over DETR's geometric series of ``temperature`` wavelengths."""
    i = torch.arange(num_feats, dtype=torch.float32, device=coords.device)
    dim_t = temperature ** (2 * (i // 2) / num_feats)
    angles = coords[..., None] / dim_t
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


def sine_of_points(points: Tensor, dim: int) -> Tensor:
    """(..., 2) points (x, y) in [0, 1] of the image -> (..., dim): the channels that
    :class:`PositionEmbeddingSine` (``dim // 2`` features, normalised) gives a feature cell
    whose far corner lies at that point, [pos_y, pos_x]."""
    scaled = points.to(torch.float32) * (2 * math.pi)
    return torch.cat((sine_channels(scaled[..., 1], dim // 2),
                      sine_channels(scaled[..., 0], dim // 2)), dim=-1)


class PositionEmbeddingLearned(nn.Module):
    """Learned absolute embedding: 50 row and 50 column vectors; channels [x, y]."""

    def __init__(self, num_pos_feats: int, max_size: int = 50):
        super().__init__()
        self.row_embed = nn.Embedding(max_size, num_pos_feats)
        self.col_embed = nn.Embedding(max_size, num_pos_feats)
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self, mask: Tensor) -> Tensor:
        B, h, w = mask.shape
        limit = self.row_embed.num_embeddings
        if h > limit or w > limit:
            raise ValueError(
                f"learned position embedding supports feature maps up to {limit}x{limit}, "
                f"got {h}x{w}; use position_embedding='sine' or smaller images"
            )
        x_emb = self.col_embed(torch.arange(w, device=mask.device))  # (w, F)
        y_emb = self.row_embed(torch.arange(h, device=mask.device))  # (h, F)
        pos = torch.cat(
            [x_emb.unsqueeze(0).expand(h, -1, -1), y_emb.unsqueeze(1).expand(-1, w, -1)], dim=-1
        )
        return pos.permute(2, 0, 1).unsqueeze(0).expand(B, -1, -1, -1)


def build_position_encoding(kind: str, hidden_dim: int) -> nn.Module:
    """``kind``: 'sine' or 'learned' (checked by the model config)."""
    if kind == "sine":
        return PositionEmbeddingSine(hidden_dim // 2, normalize=True)
    return PositionEmbeddingLearned(hidden_dim // 2)
