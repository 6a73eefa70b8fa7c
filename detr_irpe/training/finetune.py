"""Starting a run from another checkpoint (``--finetune_from``): official DETR,
DETR-with-iRPE or ours, on data with other classes."""

from __future__ import annotations

import torch

from detr_irpe.checkpoint import Checkpoint


def finetune_options(args, source: Checkpoint, verbose: bool) -> None:
    """Set ``args.enc_rpe2d`` and ``args.query_anchors`` from the source unless given;
    refuse what cannot carry over."""
    path, theirs = args.finetune_from, source.options.get("enc_rpe2d", "")
    if "query_anchors" not in args.given:  # its box head predicts from the cells, or not
        args.query_anchors = source.options.get("query_anchors", False)
    if "enc_rpe2d" not in args.given:
        args.enc_rpe2d = theirs
    elif theirs == "" and verbose:  # plain DETR into iRPE: only the tables are new
        start = "at zero" if args.irpe_init == "zero" else "Xavier-uniform"
        print(f"note: {path} is plain DETR; the {args.enc_rpe2d} tables are new and start "
              f"{start} (--irpe_init zero starts from the checkpoint's function)")
    elif theirs not in ("", args.enc_rpe2d):
        raise ValueError(f"--finetune_from {path} was trained with --enc_rpe2d {theirs!r} but "
                         f"this run asks for {args.enc_rpe2d!r}; leave --enc_rpe2d out to use "
                         f"the checkpoint's, or pass the same value")
    if args.backbone_stride == 16 and source.options.get("backbone_stride") == 32:
        raise ValueError(f"--finetune_from {path} has a layer4 (stride 32); "
                         f"--backbone_stride 16 leaves it out: drop --backbone_stride 16")


def finetune_state(model: torch.nn.Module, source: dict, reset_queries: bool) -> dict:
    """Copy from ``source`` every tensor whose name and shape fit ``model``, except the
    class head (always re-initialised: the classes differ) and, optionally, the query
    embeddings.  Returns a report: kept / reinitialised / mismatched / unused names."""
    target = model.state_dict()
    fresh = ("class_embed.",) + (("query_embed.",) if reset_queries else ())
    kept, mismatched = [], []
    for name, tensor in source.items():
        if name not in target or name.startswith(fresh):
            continue
        if target[name].shape == tensor.shape:
            target[name] = tensor
            kept.append(name)
        else:
            mismatched.append(f"{name} {tuple(tensor.shape)} -> {tuple(target[name].shape)}")
    model.load_state_dict(target, strict=True)
    reinit = sorted(set(target) - set(kept))
    unused = sorted(set(source) - set(target))
    return {"kept": kept, "reinitialised": reinit, "mismatched": mismatched, "unused": unused}


def print_finetune(report: dict, path: str) -> None:
    print(f"fine-tuning from {path}: kept {len(report['kept'])} tensors, re-initialised "
          f"{len(report['reinitialised'])}: {', '.join(report['reinitialised'])}")
    if report["mismatched"]:
        print(f"  shape mismatch (re-initialised): {'; '.join(report['mismatched'])}")
    if report["unused"]:
        print(f"  not in the new model (ignored): {', '.join(report['unused'])}")
