"""The hostile sweep of training: ``kill -9`` at random instants (during steps, evaluations
and the writing of checkpoints and the log), then ``--resume auto``, must give the run that
was never interrupted: every epoch logged once, the same weights bit for bit (CPU, resumes
happen at epoch boundaries), no temporary file left.  The instants are drawn afresh on
every run; a failure prints the seed that drew them."""

import json
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import ROOT, TINY_FLAGS, shapes_dataset

EPOCHS = 3
KILLS = 3


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    return shapes_dataset(tmp_path_factory.mktemp("coco"), layout="coco", num_train=6,
                          num_val=4, image_size=64, seed=8)


def _argv(coco_root, out, *extra):
    return [sys.executable, str(ROOT / "main.py"), "--coco_path", str(coco_root),
            "--output_dir", str(out), "--epochs", str(EPOCHS), "--lr_drop", "2",
            "--eval_every", "1", *TINY_FLAGS, *extra]


@pytest.mark.sweep
def test_kill_9_at_random_instants_then_resume_gives_the_uninterrupted_run(coco_root, tmp_path):
    straight = tmp_path / "straight"
    start = time.monotonic()
    subprocess.run(_argv(coco_root, straight), check=True, capture_output=True, cwd=ROOT)
    duration = time.monotonic() - start
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    killed = tmp_path / "killed"
    for _ in range(KILLS):
        run = subprocess.Popen(_argv(coco_root, killed, "--resume", "auto"), cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, duration))
        run.send_signal(signal.SIGKILL)
        run.wait()
    final = subprocess.run(_argv(coco_root, killed, "--resume", "auto"), capture_output=True,
                           text=True, cwd=ROOT)
    assert final.returncode == 0, f"seed {seed}: {final.stderr[-1500:]}"
    logs = [[json.loads(line) for line in (folder / "log.txt").read_text().splitlines()]
            for folder in (straight, killed)]
    assert [e["epoch"] for e in logs[1]] == list(range(EPOCHS)), f"seed {seed}"
    assert [e["test_coco_eval_bbox"] for e in logs[1]] == [e["test_coco_eval_bbox"]
                                                           for e in logs[0]], f"seed {seed}"
    for name in ("checkpoint.pth", "checkpoint_best.pth"):
        a = torch.load(straight / name, weights_only=True)
        b = torch.load(killed / name, weights_only=True)
        assert a["epoch"] == b["epoch"], f"seed {seed}: {name}"
        for key, tensor in a["model"].items():
            assert torch.equal(tensor, b["model"][key]), f"seed {seed}: {name} {key}"
    assert not list(killed.glob(".tmp-*")), f"seed {seed}"


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (needs the right to mount: root in a container; skipped elsewhere)."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True)
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.sweep
def test_a_full_disk_is_one_line_and_leaves_no_partial_file(coco_root, small_disk):
    out = small_disk / "run"
    run = subprocess.run(_argv(coco_root, out), capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 1
    error = run.stderr.strip().splitlines()
    assert len(error) == 1 and "no space left" in error[0] and "MB needed" in error[0]
    assert str(out / "checkpoint") in error[0]
    assert not list(out.glob(".tmp-*")) and not (out / "checkpoint.pth").exists()
