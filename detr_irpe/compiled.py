"""``--compile``: the backbone and the transformer of a DETR compiled with ``torch.compile``
for training; the input projection, the heads, the Hungarian matching and the losses stay
eager (the matching runs on the host, with SciPy).

The parts are compiled in place (``nn.Module.compile``): the modules, their parameters and
their state-dict names stay as they are -- no ``_orig_mod.`` prefix -- so a checkpoint of a
compiled run loads into an uncompiled model, and the optimiser, DDP and the EMA see the
same parameters.  :func:`plain_state_dict` also reads a state dict saved from a module
wrapped by ``torch.compile(module)`` (whose keys carry the prefix).
"""

from __future__ import annotations

from torch import nn

# What torch.compile(module) puts in front of the wrapped module's state-dict keys.
WRAPPED_PREFIX = "_orig_mod."


def compile_model(model: nn.Module, static_shapes: bool, backend: str = "inductor") -> nn.Module:
    """Compile ``model.backbone`` and ``model.transformer`` in place (mode default) and
    return ``model``.  ``static_shapes`` (``--size_buckets``): ``dynamic=False``, one graph
    per bucket; otherwise torch's default, which turns to dynamic shapes once a second
    size is seen.  Compilation happens at the first forward of each shape.  ``backend``:
    torch.compile's (``main.py`` uses the default, inductor; tests use ``eager``)."""
    for part in (model.backbone, model.transformer):
        part.compile(dynamic=False if static_shapes else None, backend=backend)
    return model


def plain_state_dict(state: dict) -> dict:
    """``state`` with every ``_orig_mod.`` (torch.compile's wrapper) taken out of its keys."""
    return {key.replace(WRAPPED_PREFIX, ""): value for key, value in state.items()}
