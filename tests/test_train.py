"""End to end through main.py on a tiny generated COCO-layout set (folder and zip)."""

import json
import math
import os
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest
import torch
from helpers import ROOT, RUN_ONLY, TINY_FLAGS, data_flags, shapes_dataset
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import main as main_module
from detr_irpe.options import parse_args


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    """COCO 2017 layout: annotations/instances_{train,val}2017.json, {train,val}2017/."""
    return shapes_dataset(tmp_path_factory.mktemp("coco"), layout="coco", num_train=6, num_val=5,
                          image_size=64, seed=3)


@pytest.fixture(scope="module")
def coco_zip_root(coco_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("coco_zip")
    shutil.copytree(coco_root / "annotations", root / "annotations")
    for split in ("train", "val"):
        with zipfile.ZipFile(root / f"{split}2017.zip", "w") as z:
            for f in sorted((coco_root / f"{split}2017").iterdir()):
                z.write(f, f"{split}2017/{f.name}")
    return root


@pytest.fixture(scope="module")
def trained(coco_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    main_module.main(["--coco_path", str(coco_root), "--output_dir", str(out), "--epochs", "1",
                      "--lr_drop", "1", *TINY_FLAGS])
    return out


@pytest.mark.slow
def test_one_epoch_writes_checkpoint_log_and_eval(trained, coco_root):
    assert (trained / "checkpoint.pth").is_file() and (trained / "checkpoint_best.pth").is_file()
    lines = (trained / "log.txt").read_text().splitlines()
    assert len(lines) == 1
    log = json.loads(lines[0])
    assert log["epoch"] == 0 and log["n_parameters"] > 0
    assert len(log["test_coco_eval_bbox"]) == 12
    for key in ("train_loss", "train_loss_ce", "train_class_error", "train_lr", "test_loss",
                "test_loss_giou_unscaled", "train_loss_bbox_0"):
        assert key in log, key
    ev = json.loads((trained / "eval" / "0000.json").read_text())
    assert ev["bbox"]["AP"] == log["test_coco_eval_bbox"][0]
    for key in ("per_category_AP", "per_category_AP50", "per_category_AR100"):
        assert set(ev[key]) == set(ev["category_names"]), key
    counts = ev["confusion"]["counts"]  # every true box is paired or missed, once
    gt = json.loads((coco_root / "annotations" / "instances_val2017.json").read_text())
    assert len(counts) == len(ev["category_names"]) + 1
    assert sum(sum(row[:-1]) for row in counts) == len(gt["annotations"])
    for name in ("pr_0000.png", "confusion_0000.png"):
        assert (trained / "eval" / name).stat().st_size > 1000, name
    ckpt = torch.load(trained / "checkpoint.pth", weights_only=True)
    assert ckpt["epoch"] == 0 and {"model", "optimizer", "lr_scheduler", "rng", "config"} <= set(ckpt)
    assert ckpt["lr_scheduler"]["last_epoch"] == 1


@pytest.mark.slow
def test_our_ap_equals_pycocotools_on_written_detections(trained, coco_root):
    log = json.loads((trained / "log.txt").read_text().splitlines()[0])
    gt = COCO(str(coco_root / "annotations" / "instances_val2017.json"))
    dets = json.loads((trained / "eval" / "detections_0000.json").read_text())
    assert len(dets) == 5 * 6  # every query of every val image is a detection
    E = COCOeval(gt, gt.loadRes(dets), "bbox")
    E.evaluate()
    E.accumulate()
    E.summarize()
    assert list(E.stats) == pytest.approx(log["test_coco_eval_bbox"], abs=1e-12)


@pytest.mark.slow
def test_eval_resume_reproduces_ap_for_any_batch_size(trained, coco_root, tmp_path):
    log = json.loads((trained / "log.txt").read_text().splitlines()[0])
    for bs in ("1", "3"):
        out = tmp_path / f"eval{bs}"
        args = [a for a in TINY_FLAGS]
        args[args.index("--batch_size") + 1] = bs
        main_module.main(["--coco_path", str(coco_root), "--output_dir", str(out), "--eval",
                          "--resume", str(trained / "checkpoint.pth"), *args])
        ev = json.loads((out / "eval" / "eval.json").read_text())
        assert [ev["bbox"][k] for k in ev["bbox"]] == pytest.approx(log["test_coco_eval_bbox"],
                                                                   abs=1e-9)


@pytest.mark.slow
def test_batch_norm_backbone_run_evaluates_from_its_checkpoint_alone(coco_root, tmp_path, capsys):
    """A from-scratch run with a narrow trainable batch-norm backbone (the CPU presets'
    setting): its running statistics are saved, and --eval --resume with no model flag at
    all (not even --pretrained_backbone none, which a narrow trunk needs) rebuilds that
    backbone from the checkpoint and reproduces the AP."""
    out = tmp_path / "bn"
    main_module.main(["--coco_path", str(coco_root), "--output_dir", str(out), "--epochs", "1",
                      "--lr_drop", "1", "--backbone_norm", "batch", "--backbone_width", "16",
                      "--trainable_backbone_layers", "5", *TINY_FLAGS])
    ckpt = torch.load(out / "checkpoint.pth", weights_only=True)
    assert ckpt["model"]["backbone.0.body.bn1.num_batches_tracked"] > 0
    assert not torch.equal(ckpt["model"]["backbone.0.body.bn1.running_var"],
                           torch.ones_like(ckpt["model"]["backbone.0.body.bn1.running_var"]))
    log = json.loads((out / "log.txt").read_text().splitlines()[0])
    ev_out = tmp_path / "bn_eval"
    main_module.main(["--coco_path", str(coco_root), "--output_dir", str(ev_out), "--eval",
                      "--resume", str(out / "checkpoint.pth"), *RUN_ONLY])
    printed = capsys.readouterr().out
    assert "backbone_norm='batch'" in printed and "pretrained_backbone='none'" in printed
    ev = json.loads((ev_out / "eval" / "eval.json").read_text())
    assert [ev["bbox"][k] for k in ev["bbox"]] == pytest.approx(log["test_coco_eval_bbox"], abs=1e-9)


@pytest.mark.slow
def test_resume_continues_optimizer_scheduler_and_epoch(trained, coco_root, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(trained, out)
    main_module.main(["--coco_path", str(coco_root), "--output_dir", str(out), "--epochs", "2",
                      "--lr_drop", "1", "--resume", "auto", *TINY_FLAGS])
    lines = [json.loads(x) for x in (out / "log.txt").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [0, 1]
    # lr dropped after epoch 0 (lr_drop 1), so epoch 1 trains at 0.1 x lr.
    assert lines[1]["train_lr"] == pytest.approx(1e-4)
    ckpt = torch.load(out / "checkpoint.pth", weights_only=True)
    first = torch.load(trained / "checkpoint.pth", weights_only=True)
    assert ckpt["epoch"] == 1
    assert ckpt["optimizer"]["state"][0]["step"] > first["optimizer"]["state"][0]["step"]


@pytest.mark.slow
def test_zip_layout_trains_and_matches_folder(coco_zip_root, coco_root, trained, tmp_path):
    out = tmp_path / "zip_eval"
    main_module.main(["--coco_path", str(coco_zip_root), "--output_dir", str(out), "--eval",
                      "--resume", str(trained / "checkpoint.pth"), *TINY_FLAGS])
    zipped = json.loads((out / "eval" / "eval.json").read_text())["bbox"]
    log = json.loads((trained / "log.txt").read_text().splitlines()[0])
    assert list(zipped.values()) == pytest.approx(log["test_coco_eval_bbox"], abs=1e-9)
    out2 = tmp_path / "zip_train"
    main_module.main(["--coco_path", str(coco_zip_root), "--output_dir", str(out2), "--epochs", "1",
                      *TINY_FLAGS])
    assert (out2 / "checkpoint.pth").is_file()


@pytest.mark.parametrize("preset,epochs,drop", [("detr_r50_irpe_150e", 150, 100),
                                                ("detr_r50_irpe_300e", 300, 200),
                                                ("detr_r50_150e", 150, 100)])
def test_presets_and_schedules(coco_root, preset, epochs, drop):
    args = parse_args(["--config", str(ROOT / "configs" / f"{preset}.toml"),
                       "--coco_path", str(coco_root), "--output_dir", "out"])
    assert (args.epochs, args.lr_drop) == (epochs, drop)
    assert args.enc_rpe2d == ("" if "irpe" not in preset else "rpe-2.0-product-ctx-1-k")
    # Explicit flags override both the preset and its schedule.
    args = parse_args(["--config", str(ROOT / "configs" / f"{preset}.toml"), "--epochs", "400",
                       "--coco_path", str(coco_root), "--output_dir", "out"])
    assert (args.epochs, args.lr_drop) == (400, drop)
    args = parse_args(["--schedule", "500e", "--coco_path", str(coco_root), "--output_dir", "out"])
    assert (args.epochs, args.lr_drop) == (500, 400)


def test_a_drop_beyond_the_run_is_noted_for_the_step_schedule_only(coco_root, capsys):
    base = ["--coco_path", str(coco_root), "--output_dir", "out", "--epochs", "14"]
    parse_args(base)
    assert "the learning rate never drops" in capsys.readouterr().err  # DETR's lr_drop 200
    parse_args([*base, "--lr_schedule", "cosine"])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("argv,message", [
    (["--epochs", "0"], "--epochs 0"),
    (["--batch_size", "0"], "--batch_size 0"),
    (["--backbone", "resnet99"], "resnet99"),
    (["--enc_rpe2d", "rpe-2-product"], "--enc_rpe2d"),
    (["--eval"], "--eval needs --resume"),
    (["--masks"], "--masks"),
    (["--epochs", "10", "--lr_drop", "20"], "--lr_drop 20 > --epochs 10"),
    (["--nheads", "7"], "not divisible by --nheads 7"),
    ([], "training needs --output_dir"),
])
def test_bad_flags_fail_with_one_clear_line(coco_root, argv, message, capsys):
    out = [] if message.startswith("training needs") else ["--output_dir", "out"]
    with pytest.raises(SystemExit) as err:
        parse_args(["--coco_path", str(coco_root), *out, *argv])
    assert err.value.code == 2
    printed = capsys.readouterr().err
    assert message in printed
    assert printed.count("\n") == 1 and printed.startswith("main.py: error: ")


def test_missing_dataset_is_explained(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_args([])
    assert "--coco_path" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--coco_path", str(tmp_path)])
    assert "instances_val2017.json" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_two_processes_gathers_evaluation(trained, coco_root, tmp_path):
    """torchrun, 2 CPU processes (gloo): distributed evaluation gathers every image once
    (same AP as one process)."""
    out = tmp_path / "ddp"
    _torchrun_main(29731, ["--coco_path", str(coco_root), "--resume", str(trained / "checkpoint.pth"),
                           "--eval", *TINY_FLAGS[:-2]], out)  # without --threads: one per process
    ev = json.loads((out / "eval" / "eval.json").read_text())
    log = json.loads((trained / "log.txt").read_text().splitlines()[0])
    assert list(ev["bbox"].values()) == pytest.approx(log["test_coco_eval_bbox"], abs=1e-9)
    dets = json.loads((out / "eval" / "detections_eval.json").read_text())
    assert len(dets) == 5 * 6  # 5 images, padded sampler duplicates removed


@pytest.mark.slow
def test_resume_at_epoch_boundary_is_bit_exact(coco_root, tmp_path):
    """Two epochs straight == one epoch, stop, --resume auto for the second (CPU): the
    weights, and with --ema (which leaves training alone) the average and its count."""
    flags = [*TINY_FLAGS, "--lr_drop", "1", "--eval_every", "1", "--ema", "0.7"]
    flags[flags.index("--num_workers") + 1] = "1"  # worker seeding must survive the resume too
    straight = tmp_path / "straight"
    main_module.main(["--coco_path", str(coco_root), "--output_dir", str(straight),
                      "--epochs", "2", *flags])
    split = tmp_path / "split"
    main_module.main(["--coco_path", str(coco_root), "--output_dir", str(split),
                      "--epochs", "1", *flags])
    main_module.main(["--coco_path", str(coco_root), "--output_dir", str(split),
                      "--epochs", "2", "--resume", "auto", *flags])
    a = torch.load(straight / "checkpoint.pth", weights_only=True)
    b = torch.load(split / "checkpoint.pth", weights_only=True)
    assert a["epoch"] == b["epoch"] == 1
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert a["ema_updates"] == b["ema_updates"] == 6  # 3 steps per epoch, 2 epochs
    assert not torch.equal(a["ema"]["class_embed.bias"], a["model"]["class_embed.bias"])
    for name, tensor in a["ema"].items():
        assert torch.equal(tensor, b["ema"][name]), name


def _scores_by_image(path: Path) -> dict:
    out = {}
    for det in json.loads(path.read_text()):
        out.setdefault(det["image_id"], []).append(det["score"])
    return {k: sorted(v) for k, v in out.items()}


@pytest.mark.slow
def test_official_eval_protocol_pads_images_in_pairs(trained, coco_root, tmp_path):
    """--eval_protocol official gives the detections of the model run on consecutive
    pairs of val images padded together (recomputed here), which differ from the
    per-image protocol once the backbone's norms are not the identity."""
    from detr_irpe import build_detr, load_checkpoint
    from detr_irpe.data import build_coco, make_transforms

    state = torch.load(trained / "checkpoint.pth", weights_only=True)
    g = torch.Generator().manual_seed(0)
    for name, t in state["model"].items():  # frozen norms that do not map zero to zero
        if name.startswith("backbone.") and name.endswith(("running_mean", "bias")):
            t.copy_(torch.randn(t.shape, generator=g) * 0.2)
    path = tmp_path / "norms.pth"
    torch.save(state, path)
    scores = {}
    for protocol in ("official", "per_image"):
        out = tmp_path / protocol
        main_module.main(["--coco_path", str(coco_root), "--output_dir", str(out), "--eval",
                          "--resume", str(path), "--eval_protocol", protocol, *TINY_FLAGS])
        scores[protocol] = _scores_by_image(out / "eval" / "detections_eval.json")
    ckpt = load_checkpoint(str(path))
    model = build_detr(ckpt.config())[0]
    model.load_state_dict(ckpt.model)
    model.eval()
    val = build_coco(coco_root, "val", make_transforms("val", max_size=96, val_size=64))
    with torch.no_grad():
        for start in range(0, len(val), 2):  # --batch_size 2, sequential order
            pair = [val[i] for i in range(start, min(start + 2, len(val)))]
            probs = model([img for img, _ in pair])["pred_logits"].softmax(-1)[..., :-1]
            for (_, target), p in zip(pair, probs):
                expected = sorted(p.max(-1).values.tolist())
                got = scores["official"][int(target["image_id"])]
                assert got == pytest.approx(expected, abs=1e-5)
    assert any(scores["official"][k] != pytest.approx(v, abs=1e-4)
               for k, v in scores["per_image"].items())


def _torchrun_main(port: int, flags: list, out: Path) -> None:
    _torchrun_together([(port, flags, out)])


def _torchrun_together(runs: list) -> None:
    """Each (port, flags, out) as a 2-process ``main.py`` under torchrun, all at once (their
    start-up and rendezvous overlap); each must exit 0."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                               f"--master_port={port}", str(ROOT / "main.py"), "--output_dir",
                               str(out), *flags], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
             for port, flags, out in runs]
    try:
        for proc in procs:
            printed, _ = proc.communicate(timeout=240)
            assert proc.returncode == 0, printed[-5000:]
    finally:  # a failed or timed-out run leaves no launch behind holding its port
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.mark.slow
@pytest.mark.sweep  # 20-45 s of processes: in the long checks
def test_ddp_resume_restores_each_process_random_state(coco_root, tmp_path):
    """2 processes, 2 epochs straight == 1 epoch, stop, --resume auto for the second, bit
    for bit: each process gets back its own augmentation and dropout streams; the EMA
    (of the model inside DDP) continues too."""
    flags = ["--coco_path", str(coco_root), "--lr_drop", "1", "--eval_every", "1", "--ema", "0.7",
             *TINY_FLAGS[:-2]]
    _torchrun_together([(29735, ["--epochs", "2", *flags], tmp_path / "straight"),
                        (29736, ["--epochs", "1", *flags], tmp_path / "split")])
    stored = torch.load(tmp_path / "split" / "checkpoint.pth", weights_only=True)["rng"]
    assert len(stored) == 2 and not torch.equal(stored[0]["torch"], stored[1]["torch"])
    _torchrun_main(29735, ["--epochs", "2", "--resume", "auto", *flags],
                   tmp_path / "split")
    a = torch.load(tmp_path / "straight" / "checkpoint.pth", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoint.pth", weights_only=True)
    assert a["epoch"] == b["epoch"] == 1
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert a["ema_updates"] == b["ema_updates"] == 2  # 1 step per epoch and process
    for name, tensor in a["ema"].items():
        assert torch.equal(tensor, b["ema"][name]), name


@pytest.mark.slow
def test_resume_keeps_stored_lr_drop_unless_another_is_given(trained, coco_root, tmp_path,
                                                             capsys):
    """The run in ``trained`` dropped the lr after epoch 0 (--lr_drop 1)."""
    flags = ["--coco_path", str(coco_root), "--epochs", "2", "--eval_every", "5", *TINY_FLAGS]
    lrs = {}
    for name, extra in (("kept", []), ("changed", ["--lr_drop", "2"])):
        out = tmp_path / name
        shutil.copytree(trained, out)
        capsys.readouterr()
        main_module.main(["--output_dir", str(out), "--resume", "auto", *extra, *flags])
        printed = capsys.readouterr().out
        lrs[name] = json.loads((out / "log.txt").read_text().splitlines()[-1])["train_lr"]
        reports = [line for line in printed.splitlines() if line.startswith("lr schedule:")]
        assert len(reports) == (1 if extra else 0), printed
    assert lrs["kept"] == pytest.approx(1e-4)  # the stored drop after epoch 0 (default 200 ignored)
    assert lrs["changed"] == pytest.approx(1e-3)  # drop at 2: epoch 1 runs at the base lr
    ckpt = torch.load(tmp_path / "changed" / "checkpoint.pth", weights_only=True)
    assert ckpt["lr_scheduler"]["step_size"] == 2


def _stop_process_group(cmd, env, sig):
    """Start ``cmd`` in its own process group, send ``sig`` to the whole group (data-loader
    workers included, as ``timeout``, ``kill -- -PGID``, SLURM and Ctrl-C do) once training
    steps are running; returns the exit code and everything printed."""
    import re
    import time

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines = []
    deadline = time.time() + 120
    for line in proc.stdout:
        lines.append(line)
        if re.match(r"Epoch \d+ \[", line) or time.time() > deadline:
            break
    os.killpg(proc.pid, sig)
    rest, _ = proc.communicate(timeout=120)
    return proc.returncode, "".join(lines) + rest


@pytest.mark.slow
@pytest.mark.sweep  # 20-45 s of processes: in the long checks
def test_sigterm_then_sigint_to_the_process_group_save_and_exit_75(coco_root, tmp_path):
    """SIGTERM to the whole process group with two data-loader workers: one message, a
    loadable checkpoint, exit code 75; --resume auto continues from that step, and SIGINT
    to its group does the same."""
    import signal

    out = tmp_path / "preempted"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    flags = [*TINY_FLAGS, "--print_freq", "1"]
    flags[flags.index("--num_workers") + 1] = "2"
    cmd = [sys.executable, str(ROOT / "main.py"), "--coco_path", str(coco_root),
           "--output_dir", str(out), "--epochs", "50", *flags]
    code, printed = _stop_process_group(cmd, env, signal.SIGTERM)
    assert code == 75, printed
    assert printed.count("received SIG") == 1 and "received SIGTERM" in printed, printed
    assert "DataLoader worker" not in printed and "Traceback" not in printed, printed
    first = torch.load(out / "checkpoint.pth", weights_only=True)
    assert first["resume_step"] >= 1

    code, printed = _stop_process_group(cmd + ["--resume", "auto"], env, signal.SIGINT)
    assert code == 75, printed
    assert printed.count("received SIG") == 1 and "received SIGINT" in printed, printed
    assert "Traceback" not in printed and "KeyboardInterrupt" not in printed, printed
    assert f"step {first['resume_step']})" in printed  # continued where the first run stopped
    second = torch.load(out / "checkpoint.pth", weights_only=True)
    assert (second["epoch"], second["resume_step"]) > (first["epoch"], first["resume_step"])


# ---------------------------------------------------------------------------------------
# After training: the checkpoint alone evaluates and predicts.

@pytest.mark.slow
def test_eval_takes_every_model_option_and_size_from_the_checkpoint(trained, coco_root, tmp_path,
                                                                    capsys):
    out = tmp_path / "eval_bare"
    main_module.main(["--coco_path", str(coco_root), "--output_dir", str(out), "--eval",
                      "--resume", str(trained / "checkpoint.pth"), *RUN_ONLY])
    printed = capsys.readouterr().out
    assert "trained through epoch 0" in printed
    assert "enc_layers=1" in printed and "val_size=64" in printed
    ev = json.loads((out / "eval" / "eval.json").read_text())
    assert ev["epoch"] == 0 and isinstance(ev["epoch"], int)
    log = json.loads((trained / "log.txt").read_text().splitlines()[0])
    assert list(ev["bbox"].values()) == pytest.approx(log["test_coco_eval_bbox"], abs=1e-9)
    assert json.loads((trained / "eval" / "0000.json").read_text())["epoch"] == 0
    written = json.loads((out / "args.json").read_text())
    assert (written["dim_feedforward"], written["val_size"]) == (32, 64)


@pytest.mark.parametrize("flag,ours,theirs", [("--enc_layers", "3", "enc_layers 1"),
                                              ("--dim_feedforward", "64", "dim_feedforward 32"),
                                              ("--enc_rpe2d", "", "'rpe-2.0-product-ctx-1-k'")])
@pytest.mark.slow
def test_a_flag_contradicting_the_checkpoint_is_one_line_naming_both(trained, coco_root,
                                                                     tmp_path, flag, ours, theirs):
    out = tmp_path / "contradiction"
    with pytest.raises(ValueError) as err:
        main_module.main(["--coco_path", str(coco_root), "--output_dir", str(out), "--eval",
                          "--resume", str(trained / "checkpoint.pth"), flag, ours, *RUN_ONLY])
    message = str(err.value)
    assert "\n" not in message and f"{flag} {ours or repr(ours)} (from the command line)" in message
    assert theirs in message and f"leave {flag} out" in message
    assert not (out / "args.json").exists()  # a failed start leaves no args.json


@pytest.mark.slow
def test_resume_auto_on_a_finished_run_says_nothing_is_left(trained, coco_root, tmp_path, capsys):
    out = tmp_path / "finished"
    shutil.copytree(trained, out)
    before = (out / "log.txt").read_text()
    main_module.main(["--coco_path", str(coco_root), "--output_dir", str(out), "--epochs", "1",
                      "--resume", "auto", *RUN_ONLY])
    assert "nothing left to train" in capsys.readouterr().out
    assert (out / "log.txt").read_text() == before


@pytest.mark.slow
def test_predict_tool_gives_the_evaluators_detections(trained, coco_root, tmp_path, capsys):
    """tools/predict.py with the checkpoint alone (no size flags) on the validation images
    writes the detections the evaluation wrote: boxes within 1e-3 px, the same scores."""
    from tools import predict as predict_tool

    out = tmp_path / "pred"
    code = predict_tool.main([
        "--checkpoint", str(trained / "checkpoint.pth"), "--images", str(coco_root / "val2017"),
        "--coco_json", str(coco_root / "annotations" / "instances_val2017.json"),
        "--out", str(out), "--threshold", "0", "--device", "cpu"])
    assert code == 0 and "overrides" not in capsys.readouterr().out

    def by_image(dets):
        rows = {}
        for d in sorted(dets, key=lambda d: (d["image_id"], -d["score"], d["bbox"])):
            rows.setdefault(d["image_id"], []).append(d)
        return rows

    ours = by_image(json.loads((out / "predictions.json").read_text()))
    evaluator = by_image(json.loads((trained / "eval" / "detections_0000.json").read_text()))
    assert ours.keys() == evaluator.keys() and len(ours) == 5
    for image_id, rows in evaluator.items():
        mine = ours[image_id]
        assert [d["category_id"] for d in mine] == [d["category_id"] for d in rows]
        assert [d["score"] for d in mine] == pytest.approx([d["score"] for d in rows], abs=1e-6)
        for a, b in zip(mine, rows):
            assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-3)
    code = predict_tool.main([
        "--checkpoint", str(trained / "checkpoint.pth"), "--images", str(coco_root / "val2017"),
        "--out", str(tmp_path / "pred80"), "--size", "80", "--device", "cpu"])
    assert code == 0 and "size 80 overrides the val_size 64" in capsys.readouterr().out


@pytest.mark.slow
def test_ema_is_evaluated_saved_and_loaded_by_eval_and_predict(coco_root, tmp_path):
    """--ema: the checkpoint holds the average beside the trained weights; the training's
    evaluation, --eval and the Detector all use the average (same detections)."""
    from detr_irpe.inference.detector import Detector

    out = tmp_path / "ema"
    main_module.main(["--coco_path", str(coco_root), "--output_dir", str(out), "--epochs", "1",
                      "--lr_drop", "1", "--ema", "0.5", *TINY_FLAGS])
    ckpt = torch.load(out / "checkpoint.pth", weights_only=True)
    assert ckpt["ema"].keys() == ckpt["model"].keys() and ckpt["ema_updates"] == 3
    name = "class_embed.weight"
    assert not torch.equal(ckpt["ema"][name], ckpt["model"][name])
    main_module.main(["--coco_path", str(coco_root), "--output_dir", str(out / "again"),
                      "--eval", "--resume", str(out / "checkpoint.pth"), *TINY_FLAGS])
    during = json.loads((out / "eval" / "detections_0000.json").read_text())
    after = json.loads((out / "again" / "eval" / "detections_eval.json").read_text())
    assert [d["score"] for d in after] == pytest.approx([d["score"] for d in during], abs=1e-6)
    detector = Detector.from_checkpoint(out / "checkpoint.pth", device="cpu")
    assert torch.equal(detector.model.state_dict()[name], ckpt["ema"][name])


@pytest.mark.slow
def test_scratch_preset_on_custom_data_fits_its_time_budget_and_sizes_itself(tmp_path):
    """The CPU scratch preset, as a user runs it: only the data given, a short budget.  The
    whole process ends within the budget (plus a loose allowance for a loaded machine), the
    plan and the sizes taken from the data are printed, and the last epoch is evaluated."""
    root = shapes_dataset(tmp_path / "data", num_train=16, num_val=4, image_size=64, seed=5)
    out, minutes = tmp_path / "run", 0.5
    argv = [sys.executable, str(ROOT / "main.py"), "--config", str(ROOT / "configs" / "scratch_cpu.toml"),
            *data_flags(root), "--output_dir", str(out), "--time_budget", str(minutes),
            "--threads", "2"]
    start = time.monotonic()
    run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - start
    assert run.returncode == 0, run.stderr[-2000:]
    assert elapsed < minutes * 60 + 20, f"{elapsed:.0f} s for a {minutes} min budget"
    assert "time budget 0.5 min" in run.stdout
    sizes = json.loads((out / "args.json").read_text())
    images = json.loads((root / "annotations" / "instances_train.json").read_text())["images"]
    shorter = sorted(min(im["width"], im["height"]) for im in images)
    preset = tomllib.loads((ROOT / "configs" / "scratch_cpu.toml").read_text())
    zoom, step = preset["image_zoom"], math.lcm(8, preset.get("size_multiple", 1))
    # the 90th percentile of the shorter sides, times the preset's zoom, to the nearest
    # multiple of 8 px and of the preset's size multiple
    percentile = shorter[math.ceil(0.9 * len(shorter)) - 1]
    assert sizes["val_size"] == step * math.floor(percentile * zoom / step + 0.5)
    assert f"--val_size {sizes['val_size']}" in run.stdout
    log = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
    # How many epochs fit depends on the machine's speed of the moment (one on a loaded
    # 2-core machine); what must hold is that the run ends with an evaluated epoch.
    assert log and "test_coco_eval_bbox" in log[-1]


@pytest.mark.slow
def test_a_last_epoch_cut_short_by_the_budget_trains_only_its_steps(coco_root, tmp_path,
                                                                   monkeypatch):
    """A plan of two epochs whose last has one step (the 6 training images make 3 steps of
    2): the run trains 3 + 1 steps, evaluates the shortened epoch, and its checkpoint
    records the plan, so that a resume knows the run is complete."""
    from detr_irpe.training import recipe
    from detr_irpe.training.budget import TimeBudget

    class FixedPlan(TimeBudget):  # the plan a budget could make, without the clock
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.plan.epochs, self.plan.eval_epochs, self.plan.last_steps = 2, [1], 1

        def step_done(self):
            pass

        def epoch_done(self, epoch):
            pass

    monkeypatch.setattr(recipe, "TimeBudget", FixedPlan)
    out = tmp_path / "run"
    main_module.main(["--coco_path", str(coco_root), "--output_dir", str(out), "--time_budget",
                      "5", *TINY_FLAGS])
    ckpt = torch.load(out / "checkpoint.pth", weights_only=False)
    assert ckpt["lr_scheduler"]["last_epoch"] == 3 + 1  # one schedule step per optimiser step
    assert ckpt["plan"]["last_steps"] == 1 and ckpt["epoch"] == 1
    log = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
    assert [entry["epoch"] for entry in log] == [0, 1] and "test_coco_eval_bbox" in log[1]


@pytest.mark.slow
def test_eval_refuses_a_checkpoint_whose_categories_differ_from_the_val_sets(trained, coco_root,
                                                                          tmp_path):
    ckpt = torch.load(trained / "checkpoint.pth", weights_only=False)
    names = dict(ckpt["category_names"])
    first = min(names)
    names[first] = "car"  # the model's label for this id meant something else
    ckpt["category_names"] = names
    torch.save(ckpt, tmp_path / "other.pth")
    with pytest.raises(ValueError) as err:
        main_module.main(["--coco_path", str(coco_root), "--eval", "--resume",
                          str(tmp_path / "other.pth"), *RUN_ONLY])
    message = str(err.value)
    assert "\n" not in message and "other categories" in message and "'car'" in message


class _Crash(BaseException):
    """Stands for a kill: nothing in the run catches it."""


@pytest.mark.slow
def test_a_crash_while_the_best_checkpoint_is_written_loses_no_epoch(coco_root, tmp_path,
                                                                     monkeypatch):
    """Epoch 0 always improves the best AP, so it writes checkpoint_best.pth; the run dies
    right there.  After --resume auto every epoch is in log.txt exactly once and the best
    checkpoint exists (writing checkpoint.pth last makes the crash redo epoch 0)."""
    import detr_irpe.training.recipe as train_module

    real, crashed = train_module.save_checkpoint, []

    def crash_once(obj, path):
        if path.endswith("checkpoint_best.pth") and not crashed:
            crashed.append(path)
            raise _Crash
        real(obj, path)

    monkeypatch.setattr(train_module, "save_checkpoint", crash_once)
    out = tmp_path / "run"
    flags = ["--coco_path", str(coco_root), "--output_dir", str(out), "--epochs", "2",
             "--lr_drop", "2", *TINY_FLAGS]
    with pytest.raises(_Crash):
        main_module.main(flags)
    (out / ".tmp-left-by-a-kill.pth").write_bytes(b"partial")  # what a real kill leaves
    main_module.main([*flags, "--resume", "auto"])
    epochs = [json.loads(line)["epoch"] for line in (out / "log.txt").read_text().splitlines()]
    assert epochs == [0, 1]
    assert (out / "checkpoint_best.pth").is_file()
    assert not list(out.glob(".tmp-*"))


def test_log_repair_drops_a_torn_line_and_epochs_to_be_trained_again(tmp_path, capsys):
    from detr_irpe.training.epoch_log import repair_log

    log = tmp_path / "log.txt"
    log.write_text("".join(json.dumps({"epoch": e, "train_loss": 1.0}) + "\n" for e in range(3))
                   + '{"epoch": 3, "train_lo')
    repair_log(log, start_epoch=2)
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [0, 1]
    assert log.read_text().endswith("\n") and "dropped 2 line(s)" in capsys.readouterr().out
    repair_log(log, start_epoch=2)  # nothing more to drop: untouched, silent
    assert capsys.readouterr().out == ""
