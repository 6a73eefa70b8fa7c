"""The small multi-layer perceptron of DETR's box heads."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class MLP(nn.Module):
    """Linear layers with ReLU between them (not after the last)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [out_dim])
        )

    def forward(self, x: Tensor) -> Tensor:
        for n, layer in enumerate(self.layers):
            x = layer(x) if n == len(self.layers) - 1 else F.relu(layer(x))
        return x
