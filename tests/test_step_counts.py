"""What one training step asks of the device, counted on the CPU: ATen ops and host syncs
(``benchmarks.dispatch``).  Counts, not times: they hold on a loaded machine."""

import torch
from helpers import tiny_model

from benchmarks.count_ops import count_step
from benchmarks.dispatch import count_dispatch
from benchmarks.workload import train_step_fn

# DETR-R50 at the default flags, one step on two 96 x 128 images: 6105 ops with per-layer
# matching, 5547 with one matching for all layers, 4435 with the losses of all layers in
# one batch (docs/benchmarks.md, 2026-12-03).
MAX_R50_OPS = 4600


def test_counter_counts_the_reads_a_gpu_would_wait_for():
    t = torch.arange(4.0)

    def reads():
        t.sum().item()
        bool(t[0] > 0)
        t.tolist()
        t.numpy()
        t.nonzero()
        return (t * 2 + 1).neg()

    _, counts = count_dispatch(reads)
    assert counts.syncs == 5
    assert set(counts.syncs_by_op) == {"_local_scalar_dense", "tolist", "numpy", "nonzero"}
    assert counts.by_op["mul"] == 1 and counts.by_op["neg"] == 1 and counts.ops >= 8


def test_training_step_of_a_small_model_syncs_the_host_once():
    """Forward, matching of three decoder layers, losses, backward, clipping, fused AdamW:
    one host sync, the matcher's single copy of all costs and target checks."""
    model, criterion, _ = tiny_model(dec_layers=3, num_queries=6, num_classes=41)
    step = train_step_fn(model, criterion, torch.device("cpu"), sizes=[(64, 64), (64, 96)])
    step()
    _, counts = count_dispatch(step)
    print(f"tiny step: ops {counts.ops}, host syncs {counts.syncs} {dict(counts.sync_sites)}")
    assert counts.syncs == 1 and counts.syncs_by_op == {"numpy": 1}
    assert list(counts.sync_sites)[0].startswith("models/matcher.py")


def test_detr_r50_step_dispatches_a_bounded_number_of_ops():
    counts = count_step()
    print(f"DETR-R50 step: ops {counts.ops}, host syncs {counts.syncs}")
    assert counts.syncs == 1
    assert counts.ops <= MAX_R50_OPS


def test_training_loop_waits_for_the_device_twice_per_step():
    """train_one_epoch: per optimiser step the matcher's copy and one read of the loss and
    gradient finiteness flags (to skip a bad step); the logged figures stay on the device
    until the epoch's means are read, once."""
    from ddp_steps import batches

    from detr_irpe.config import OptimConfig, RunConfig
    from detr_irpe.training.loop import LoopSettings, train_one_epoch

    model, criterion, _ = tiny_model(num_queries=5, num_classes=3)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                            fused=True)  # as main.py; the unfused one reads each step count
    settings = LoopSettings.of(OptimConfig(), RunConfig(print_freq=1000), torch.device("cpu"),
                               verbose=False)
    stats, counts = count_dispatch(train_one_epoch, model, criterion, batches(3, 2), opt, 0,
                                   settings)
    assert stats["loss"] > 0 and stats["loss_bbox_unscaled"] > 0
    assert counts.syncs == 2 * 3 + 1, dict(counts.sync_sites)
    assert counts.syncs_by_op == {"numpy": 3, "tolist": 4}
