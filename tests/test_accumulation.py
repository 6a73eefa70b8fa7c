"""Gradient accumulation equals a larger batch and more processes; a non-finite step is
skipped by every process together (DDP tests: torchrun, 2 CPU processes, gloo)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_steps import NAN_BATCH, batches, quads, train_steps, with_nan

ROOT = Path(__file__).resolve().parents[1]


def _assert_same_models(a: dict, b: dict, exact: bool = False):
    """Equal up to float32 rounding of each tensor's largest entry (or bit for bit)."""
    for name in a:
        scale = 0.0 if exact else 1e-5 * max(1.0, float(a[name].abs().max()))
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=scale, msg=name)


def _moved(before: dict, after: dict) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before)


def test_accumulating_two_single_images_equals_one_batch_of_two():
    """Images of one step carry 1, 2, 3, 1 boxes: normalising each micro-batch by its own
    count would weigh them differently from one batch.  eos_coef 1 makes the class loss a
    plain mean over queries, which is then also the same in both runs."""
    init = train_steps([], 1, eos_coef=1.0)
    pairs = batches(2, images_per_batch=2)
    singles = [([img], [t]) for images, targets in pairs for img, t in zip(images, targets)]
    assert [len(t["labels"]) for _, (t,) in singles] == [1, 2, 3, 1]
    big = train_steps(pairs, accum_steps=1, eos_coef=1.0)
    accumulated = train_steps(singles, accum_steps=2, eos_coef=1.0)
    assert _moved(init, big)
    _assert_same_models(big, accumulated)


def test_non_finite_micro_batch_skips_the_whole_optimizer_step(capsys):
    """accum_steps 2: a NaN in the first micro-batch of step 0 discards step 0 entirely;
    step 1 then starts from the initial weights."""
    data = batches(4)
    skipped = train_steps(with_nan(data, 0), accum_steps=2)
    only_second = train_steps(data[2:], accum_steps=2)
    _assert_same_models(skipped, only_second, exact=True)
    assert capsys.readouterr().out.count("step skipped") == 1


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_steps")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_port=29733", str(ROOT / "tests" / "ddp_steps.py"), str(out)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return out, res.stdout


# The three two-process comparisons share one torchrun (~17 s): in the long checks.
@pytest.mark.sweep
def test_two_processes_equal_one_process_accumulating_two(ddp_run):
    out, _ = ddp_run
    ranks = [torch.load(out / f"clean_rank{r}.pt", weights_only=True) for r in (0, 1)]
    _assert_same_models(ranks[0], ranks[1], exact=True)
    _assert_same_models(ranks[0], train_steps(batches(6), accum_steps=2))


@pytest.mark.sweep
def test_nan_on_one_rank_is_skipped_by_both_and_reported_once(ddp_run):
    out, stdout = ddp_run
    ranks = [torch.load(out / f"nan_rank{r}.pt", weights_only=True) for r in (0, 1)]
    _assert_same_models(ranks[0], ranks[1], exact=True)
    # Step 1 (batches 2 and 3) was dropped on both ranks; steps 0 and 2 were applied.
    kept = [b for n, b in enumerate(batches(6)) if n not in (NAN_BATCH - 1, NAN_BATCH)]
    _assert_same_models(ranks[0], train_steps(kept, accum_steps=2))
    reports = [line for line in stdout.splitlines() if "step skipped" in line]
    assert len(reports) == 1 and f"image ids [{NAN_BATCH}]" in reports[0], stdout


@pytest.mark.sweep
def test_one_process_with_a_batch_of_four_equals_two_processes_of_two(ddp_run):
    """The official recipe, 8 GPUs x 2, on one GPU with --batch_size 16, in small: each
    process normalises its class loss by its own pair of images, so one process with four
    images equals two processes of two only with --class_loss_images 2 (the pairs hold 3
    and 4 boxes: their class-weight sums differ at eos_coef 0.1).  The box losses agree
    either way (divided by the all-process box count over the world size)."""
    out, _ = ddp_run
    ranks = [torch.load(out / f"pairs_rank{r}.pt", weights_only=True) for r in (0, 1)]
    _assert_same_models(ranks[0], ranks[1], exact=True)
    _assert_same_models(ranks[0], train_steps(quads(), 1, class_loss_images=2))
    whole_batch = train_steps(quads(), 1)
    with pytest.raises(AssertionError):
        _assert_same_models(ranks[0], whole_batch)
