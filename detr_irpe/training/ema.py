"""Exponential moving average of the weights (``--ema DECAY``).

After every applied optimizer step, ``ema = decay * ema + (1 - decay) * weights`` for
every parameter and buffer (``torch.optim.swa_utils``; the first update copies the
weights).  Training evaluates the average, and the checkpoint stores it under ``"ema"``
(same keys as ``"model"``) beside the trained weights, with ``"ema_updates"``.
``--eval`` and prediction load ``"ema"`` when a checkpoint has one (see
``Checkpoint.inference_model``); ``--resume`` restores both, so training continues bit-exactly.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class WeightEMA:
    """The running average of ``model``'s parameters and buffers.

    ``module``: the averaged copy (an ``nn.Module`` like ``model``, to evaluate);
    ``update(model)``: fold in the current weights; ``state_dict()`` /
    ``load_state_dict()``: ``{"ema": state dict with model's keys, "ema_updates": int}``.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self._averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay),
                                       use_buffers=True)
        self._averaged.requires_grad_(False)

    @property
    def module(self) -> nn.Module:
        return self._averaged.module

    @property
    def updates(self) -> int:
        return int(self._averaged.n_averaged)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self._averaged.update_parameters(model)

    def state_dict(self) -> dict:
        return {"ema": self.module.state_dict(), "ema_updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["ema"], strict=True)
        self._averaged.n_averaged.fill_(int(state["ema_updates"]))
