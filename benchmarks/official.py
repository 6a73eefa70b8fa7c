"""The official DETR-with-iRPE code, built beside ours for ``benchmarks/compare_official.py``.

The official code is imported from a checkout given by path (it is not a dependency and is
not copied here).  Our model takes the official model's weights (loaded strictly) and the
same images and targets.  Each side takes its training step the way its own ``main.py``
does: the official one with its ``SetCriterion``, its loss read by ``.item()`` and
``torch.optim.AdamW`` with its default implementation; ours as
:func:`benchmarks.workload.train_step_fn` takes it.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch

from benchmarks.workload import build_model, make_batch


def import_official(path: str | Path):
    """The official code's ``main`` and ``models`` modules, imported from ``path`` (the
    folder holding its ``main.py``); its ResNet is built without downloading weights."""
    root = Path(path).resolve()
    if not (root / "main.py").is_file() or not (root / "models" / "rpe_attention").is_dir():
        raise SystemExit(f"--official {path}: not a DETR-with-iRPE checkout (expected main.py "
                         "and models/rpe_attention/ there; give the folder "
                         "Cream/iRPE/DETR-with-iRPE of github.com/microsoft/Cream)")
    sys.path.insert(0, str(root))
    try:
        official_main = importlib.import_module("main")
    except ModuleNotFoundError as err:
        raise SystemExit(f"the official code in {root} needs the package {err.name!r}, "
                         f"which is not installed here: pip install {err.name}") from None
    backbone = importlib.import_module("models.backbone")
    # The official backbone asks for ImageNet weights on the main process; nothing can be
    # downloaded here and the weights are overwritten by the comparison anyway.
    backbone.is_main_process = lambda: False
    return official_main, importlib.import_module("models")


def build_official(official_main, official_models, enc: str):
    """(model, criterion, optimizer) of the official code at its default flags with
    ``--enc_rpe2d enc``, on the CPU, with the optimizer its ``main.py`` builds."""
    args = official_main.get_args_parser().parse_args(["--enc_rpe2d", enc, "--device", "cpu"])
    torch.manual_seed(0)
    model, criterion, _ = official_models.build_model(args)
    groups = [
        {"params": [p for n, p in model.named_parameters()
                    if "backbone" not in n and p.requires_grad]},
        {"params": [p for n, p in model.named_parameters()
                    if "backbone" in n and p.requires_grad], "lr": args.lr_backbone},
    ]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)
    return model, criterion, optimizer, args.clip_max_norm


def official_step_fn(model, criterion, optimizer, max_norm: float):
    """One training step as the official ``engine.train_one_epoch`` takes it."""
    images, targets = make_batch(torch.device("cpu"))
    model.train()
    criterion.train()

    def step():
        outputs = model(images)
        losses = criterion(outputs, targets)
        weights = criterion.weight_dict
        loss = sum(losses[k] * weights[k] for k in losses if k in weights)
        loss.item()  # the official loop logs the loss and checks it is finite
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step()
        return loss.detach()

    return step


def forward_fn(model):
    """Batch-1 inference of the first benchmark image, without autograd."""
    image = [make_batch(torch.device("cpu"))[0][0]]
    model.eval()

    def forward():
        with torch.no_grad():
            return model(image)

    return forward


def ours_like(official_model, enc: str):
    """(model, criterion) of ours with the official model's weights, loaded strictly."""
    model, criterion, _ = build_model(enc, torch.device("cpu"))
    model.load_state_dict(official_model.state_dict(), strict=True)
    return model, criterion
