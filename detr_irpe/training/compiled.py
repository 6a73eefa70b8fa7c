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


def compile_for_inference(model: nn.Module) -> nn.Module:
    """Compile the ResNet of ``model`` (a DETR in eval mode whose weights are final) for
    inference, in place, and return ``model``: inductor with its weights frozen into the
    graph, so the frozen norms are folded once and the convolutions run with pre-packed
    weights and their bias, residual addition and ReLU fused (on CPUs, through oneDNN).

    Measured on 2 CPU cores: a DETR-R50 inference at 800 x 1066, 0.92 -> 0.78 s
    (docs/benchmarks.md).  Compiling the transformer too gave nothing there, so it stays
    eager.  Each new image size compiles once (seconds to a minute); later changes to the
    weights are not seen by the compiled code.  ``freezing`` is an inductor setting of the
    whole process; it applies to graphs run without autograd only, so a compiled training
    step (:func:`compile_model`) is not affected."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    model.backbone[0].body.compile(dynamic=False)
    return model
