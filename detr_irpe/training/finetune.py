"""Starting a run from another checkpoint (``--finetune_from``): official DETR,
DETR-with-iRPE or ours, on data with other classes."""

from __future__ import annotations

import torch


def finetune_state(model: torch.nn.Module, source: dict, reset_queries: bool) -> dict:
    """Copy from ``source`` every tensor whose name and shape fit ``model``, except the
    class head (always re-initialised: the classes differ), the box-quality head (always:
    fitted to the source model's queries, it is fitted again after the last epoch, and until
    then changes no score) and, optionally, the query embeddings (or the position MLP of
    ``--point_positions``).  Returns a report: kept / reinitialised / mismatched / unused
    names."""
    target = model.state_dict()
    fresh = ("class_embed.", "quality_embed.")
    fresh += ("query_embed.", "position_mlp.") if reset_queries else ()
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
