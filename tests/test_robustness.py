"""Numerics, interruptions and files: non-finite steps, killed saves, bad output dirs, an
image that a data-loader worker cannot decode."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import ROOT, TINY_FLAGS, data_flags, shapes_dataset, tiny_config, tiny_model

import detr_irpe
from detr_irpe.checkpoint import save_checkpoint
from detr_irpe.config import OptimConfig, RunConfig
from detr_irpe.training.loop import LoopSettings, train_one_epoch


def _tiny():
    return tiny_model(dec_layers=1, num_queries=4, num_classes=3)


def _settings(**optim):
    return LoopSettings.of(OptimConfig(**optim), RunConfig(), torch.device("cpu"), verbose=False)


def _batch(image_id, nan=False):
    img = torch.randn(3, 64, 64)
    if nan:
        img[0, 5, 5] = float("nan")
    return [img], [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]),
                    "image_id": image_id}]


def test_nan_batch_is_skipped_without_update(capsys):
    model, criterion, _ = _tiny()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = train_one_epoch(model, criterion, [_batch(11, nan=True)], opt, 0, _settings())
    assert stats == {}  # nothing was averaged: the only step was skipped
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert "image ids [11]" in capsys.readouterr().out
    # A good batch after a bad one trains normally.
    stats = train_one_epoch(model, criterion, [_batch(12, nan=True), _batch(13)], opt, 0,
                            _settings())
    assert stats["loss"] > 0
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_consecutive_bad_steps_stop_training():
    model, criterion, _ = _tiny()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loader = [_batch(i, nan=True) for i in range(3)]
    with pytest.raises(FloatingPointError, match="3 consecutive non-finite steps.*--max_bad_steps"):
        train_one_epoch(model, criterion, loader, opt, 0, _settings(max_bad_steps=3))


def test_fp16_scaler_overflows_lower_the_scale_and_are_not_bad_steps():
    """--amp fp16: a scaled gradient that overflows is the gradient scaler's to handle (it
    skips the update and halves its scale), so training goes on; before, such steps never
    reached the scaler, its scale never came down and training stopped as "non-finite"."""
    model, criterion, _ = _tiny()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    start = 2.0**127  # every scaled loss overflows float32 at first
    scaler = torch.amp.GradScaler("cpu", init_scale=start)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = train_one_epoch(model, criterion, [_batch(i) for i in range(24)], opt, 0,
                            _settings(max_bad_steps=2), scaler=scaler)
    assert scaler.get_scale() < start / 2  # halved on each overflow
    assert stats["loss"] > 0
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.sweep  # ~18 s of killed processes: in the long checks
def test_checkpoint_survives_sigkill_during_save(tmp_path):
    """Kill a process that keeps rewriting a checkpoint at arbitrary moments: the file
    on disk always loads and holds a complete state."""
    path = tmp_path / "checkpoint.pth"
    save_checkpoint({"model": {"w": torch.zeros(1000, 1000)}, "epoch": -1}, str(path))
    writer = textwrap.dedent(f"""
        import torch
        from detr_irpe.checkpoint import save_checkpoint
        n = 0
        while True:
            save_checkpoint({{"model": {{"w": torch.full((1000, 1000), float(n))}}, "epoch": n}},
                            {str(path)!r})
            n += 1
    """)
    epochs = []
    for delay in (0.5, 1.1, 1.7, 2.3):
        proc = subprocess.Popen([sys.executable, "-c", writer])
        try:
            proc.wait(timeout=delay + 3)  # import time + some saves
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        state = torch.load(path, weights_only=True)
        assert torch.all(state["model"]["w"] == float(state["epoch"])) or state["epoch"] == -1
        epochs.append(state["epoch"])
    assert max(epochs) >= 0, "the writer never saved: the test proved nothing"
    leftovers = [p for p in os.listdir(tmp_path) if p != "checkpoint.pth"]
    assert all(p.startswith(".tmp-") for p in leftovers)  # never a half-written checkpoint.pth


def test_unwritable_output_dir_is_reported_before_training(tmp_path):
    import main as main_module

    blocker = tmp_path / "file"
    blocker.write_text("x")
    root = shapes_dataset(tmp_path / "data", num_train=2, num_val=2, image_size=48, seed=1)
    with pytest.raises(OSError, match="--output_dir .* is not writable"):
        main_module.main([*data_flags(root), "--device", "cpu",
                          "--output_dir", str(blocker / "out"), "--pretrained_backbone", "none"])


def _truncate(path):
    """Keep the first half of a file: its header reads, its pixels do not decode."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_an_image_a_worker_cannot_decode_ends_the_run_with_one_line(tmp_path, mode):
    root = shapes_dataset(tmp_path / "data", num_train=4, num_val=4, image_size=48, seed=1)
    victim = sorted((root / ("val" if mode == "eval" else "train")).iterdir())[1]
    _truncate(victim)
    cfg = detr_irpe.DETRConfig.from_options(tiny_config(num_classes=3, num_queries=6))
    model, _, _ = detr_irpe.build_detr(cfg)
    ckpt = tmp_path / "checkpoint.pth"
    torch.save({"model": model.state_dict(), "config": cfg.to_dict()}, ckpt)
    run = ["--eval", "--resume", str(ckpt)] if mode == "eval" else [
        "--epochs", "1", "--lr_drop", "1", "--output_dir", str(tmp_path / "out")]
    cmd = [sys.executable, str(ROOT / "main.py"), *TINY_FLAGS, *data_flags(root), *run,
           "--num_workers", "2", "--batch_size", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        pytest.fail("the run did not end after a worker's error (workers left hanging)")
    assert proc.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and victim.name in lines[0] and "Traceback" not in err, err


def test_a_full_disk_is_one_line_with_the_path_and_the_size_and_keeps_the_old_file(tmp_path,
                                                                                   monkeypatch):
    import errno

    import detr_irpe.checkpoint as checkpoint_module

    path = tmp_path / "checkpoint.pth"
    save_checkpoint({"model": {"w": torch.zeros(10)}, "epoch": 0}, str(path))
    real_save = torch.save

    def fill_the_disk(obj, f):
        f.write(b"x" * 100)  # part of the file, then the device is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", fill_the_disk)
    with pytest.raises(OSError) as err:
        save_checkpoint({"model": {"w": torch.zeros(1000, 1000)}, "epoch": 1}, str(path))
    message = str(err.value)
    assert "\n" not in message and "no space left" in message and str(path) in message
    assert "about 4 MB needed" in message  # 1000 x 1000 float32
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    assert torch.load(path)["epoch"] == 0  # the previous checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]  # no partial file left
