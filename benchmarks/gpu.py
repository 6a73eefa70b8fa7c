"""The sections of ``python -m benchmarks.gpu_check`` (its docstring says what each
one checks): each ``*_section`` measures and returns its figures, each ``report_*`` prints
them and returns the PASS/FAIL rows.  The check runs from a source checkout."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.timing import interleaved, summarise
from benchmarks.workload import IRPE_K, build_model, make_batch, train_step_fn
from detr_irpe import build_detr
from detr_irpe.config import OptimConfig, RunConfig
from detr_irpe.data import CocoDetection, collate_fn, generate_shapes_dataset, make_transforms
from detr_irpe.evaluation import CocoEvaluator
from detr_irpe.inference.detector import Detector
from detr_irpe.training.loop import LoopSettings, autocast, evaluate

# The source checkout (tests/, main.py and configs/ are used from it).
ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16", "fp16")
AMP = {"fp32": "off", "bf16": "bf16", "fp16": "fp16"}
# AMP against fp32, same weights and batch: the eval-mode loss of the first forward, and
# the mean training loss after the same 5 last numbers of updates (of up to 30 steps).
AMP_LOSS_RTOL = {"first_forward": 0.01, "late_training": 0.05}
# main.py --amp: the mean training loss of the demo's first epoch (250 steps) against fp32;
# looser than above: fp16 loses its first updates while the scaler finds its scale.
AMP_EPOCH_LOSS_RTOL = 0.10
IRPE_OVERHEAD_LIMIT = 1.05
# The demo run: the preset as `make run` trains it, on the GPU; more loader workers, the
# same steps.
DEMO_FLAGS = ["--config", "configs/cpu_demo.toml", "--device", "cuda", "--num_workers", "4"]


def tests_section(out: Path) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "tests/test_devices.py"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    (out / "tests.log").write_text(res.stdout + res.stderr)
    last = (res.stdout.strip().splitlines() or ["(no output)"])[-1]
    print(f"pytest tests/test_devices.py: {last}")
    return {"passed": res.returncode == 0, "summary": last}


def _peak_memory(enc: str, amp: str, device) -> int:
    """Peak bytes allocated during a training step (parameters and AdamW state included)
    with only this model on the GPU."""
    model, criterion, _ = build_model(enc, device)
    step = train_step_fn(model, criterion, device, amp)
    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del model, criterion, step
    torch.cuda.empty_cache()
    return peak


def _losses_in(precision: str, device, steps: int = 30) -> dict:
    """Loss of the first forward (eval mode), and the training losses by the number of
    updates made before each forward (fp16's scaler skips the first updates while it
    finds its scale, so step counts do not line up across precisions)."""
    model, criterion, _ = build_model(IRPE_K, device)
    images, targets = make_batch(device)
    model.eval()
    with torch.no_grad(), autocast(device, AMP[precision]):
        outputs = model(images)
    losses = criterion({k: v.float() for k, v in outputs.items() if torch.is_tensor(v)}, targets)
    first = float(sum(losses[k] * w for k, w in criterion.weight_dict.items() if k in losses))
    step = train_step_fn(model, criterion, device, AMP[precision])
    by_updates, updates = {}, 0
    for _ in range(steps):
        scale = step.scaler.get_scale() if step.scaler else None
        by_updates.setdefault(updates, float(step()))
        updates += step.scaler is None or step.scaler.get_scale() >= scale
    return {"first_forward": first, "by_updates": by_updates}


def _late_loss(losses: dict, common: int) -> float:
    """Mean training loss after the last 5 of ``common`` update counts."""
    return statistics.mean(losses["by_updates"][n] for n in range(common - 5, common))


def train_section(device, reps: int) -> dict:
    result = {"memory_bytes": {}, "time": {}, "losses": {}}
    for p in PRECISIONS:
        for name, enc in (("plain", ""), ("irpe-k", IRPE_K)):
            result["memory_bytes"][f"{p} {name}"] = _peak_memory(enc, AMP[p], device)
        result["losses"][p] = _losses_in(p, device)
        torch.cuda.empty_cache()
    for p in PRECISIONS:
        fns = {}
        for name, enc in (("plain", ""), ("irpe-k", IRPE_K), ("plain (again)", "")):
            model, criterion, _ = build_model(enc, device)
            fns[name] = train_step_fn(model, criterion, device, AMP[p])
        result["time"][p] = summarise(interleaved(fns, reps, device))
        del fns
        torch.cuda.empty_cache()
    return result


def report_train(res: dict) -> list[dict]:
    rows = []
    print(f"{'':6s} {'plain ms':>9s} {'iRPE-K ms':>10s} {'ratio':>6s} {'A/A':>6s} "
          f"{'plain GiB':>10s} {'iRPE-K GiB':>11s}")
    for p in PRECISIONS:
        t = res["time"][p]
        mem = res["memory_bytes"]
        ratio = t["irpe-k"]["ratio"]
        print(f"{p:6s} {t['plain']['median_s'] * 1e3:9.1f} {t['irpe-k']['median_s'] * 1e3:10.1f} "
              f"{ratio:6.3f} {t['plain (again)']['ratio']:6.3f} "
              f"{mem[f'{p} plain'] / 2**30:10.2f} {mem[f'{p} irpe-k'] / 2**30:11.2f}")
        rows.append(verdict(f"train step iRPE-K / plain ({p})", ratio <= IRPE_OVERHEAD_LIMIT,
                             f"{ratio:.3f} (limit {IRPE_OVERHEAD_LIMIT})"))
    ref = res["losses"]["fp32"]
    for p in PRECISIONS[1:]:
        ours = res["losses"][p]
        common = min(len(ours["by_updates"]), len(ref["by_updates"]))
        pairs = {"first_forward": (ours["first_forward"], ref["first_forward"]),
                 "late_training": (_late_loss(ours, common), _late_loss(ref, common))}
        for key, (a, b) in pairs.items():
            diff = abs(a - b) / abs(b)
            rtol = AMP_LOSS_RTOL[key]
            rows.append(verdict(f"{p} loss vs fp32, {key}", diff <= rtol,
                                 f"{a:.4f} vs {b:.4f}, relative difference {diff:.4f} "
                                 f"(limit {rtol}; {common} updates compared)"))
    return rows


def profile_section(device, out: Path, steps: int = 3) -> dict:
    """GPU time per training step (fp32) by kernel, plain and iRPE-K, from the profiler:
    the sum of the kernels' own times, free of the CPU-side work that wall time includes."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    tables, per_step = [], {}
    for name, enc in (("plain", ""), ("irpe-k", IRPE_K)):
        model, criterion, _ = build_model(enc, device)
        step = train_step_fn(model, criterion, device)
        step()
        step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                step()
            torch.cuda.synchronize()
        events = prof.key_averages()
        kernels = [e for e in events if e.device_type == DeviceType.CUDA]
        per_step[name] = sum(e.self_device_time_total for e in kernels) / steps / 1e3  # ms
        tables.append(f"## {name}: {per_step[name]:.1f} ms of GPU time per step\n"
                      + events.table(sort_by="self_device_time_total", row_limit=20))
        del model, criterion, step
        torch.cuda.empty_cache()
    (out / "profile.txt").write_text("\n\n".join(tables))
    ratio = per_step["irpe-k"] / max(per_step["plain"], 1e-9)
    print(f"GPU time per fp32 step: plain {per_step['plain']:.1f} ms, iRPE-K "
          f"{per_step['irpe-k']:.1f} ms, ratio {ratio:.3f} (kernels: {out / 'profile.txt'})")
    return {"gpu_ms_per_step": per_step, "ratio": ratio}


def verdict(name: str, ok: bool | None, detail: str) -> dict:
    """A PASS/FAIL row; ``ok`` None: not measured here (e.g. a GPU target on the CPU)."""
    word = "NOT MEASURED" if ok is None else "PASS" if ok else "FAIL"
    print(f"{word}  {name}: {detail}")
    return {"check": name, "passed": None if ok is None else bool(ok), "detail": detail}


def _photo_sized_images(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (3, 480, 640), dtype=torch.uint8, generator=g) for _ in range(n)]


def _images_per_second(fn, n: int) -> float:
    fn()  # warm-up: kernels, bucket maps
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def _throughput(model, criterion, post, images, val, device) -> dict:
    """Images/s of ``Detector.predict`` on ``images`` and of the ``--eval`` loop on ``val``,
    for each precision and batch size."""
    detector = Detector(model, device=device)
    out = {}
    for precision in ("fp32", "bf16"):
        amp = AMP[precision]
        for batch in (1, 8):
            def predict(batch=batch, amp=amp):
                with autocast(device, amp):
                    detector.predict(images, threshold=0.0, batch_size=batch)

            loader = torch.utils.data.DataLoader(val, batch, collate_fn=collate_fn, num_workers=8,
                                                 pin_memory=device.type == "cuda")

            def run_eval(loader=loader, amp=amp):
                evaluator = CocoEvaluator(val.coco, val.label_to_category_id)
                settings = LoopSettings.of(OptimConfig(amp=amp), RunConfig(), device, verbose=False)
                evaluate(model, criterion, post, loader, evaluator, settings, per_image=True)

            out[f"{precision} batch {batch}"] = {"Detector": _images_per_second(predict, len(images)),
                                                 "eval": _images_per_second(run_eval, len(val))}
    return out


def inference_section(device, data_root: Path, n: int = 32) -> dict:
    images = _photo_sized_images(n)
    generate_shapes_dataset(data_root, num_train=0, num_val=n, image_size=640)
    val = CocoDetection(data_root / "val", data_root / "annotations" / "instances_val.json",
                        make_transforms("val"), train=False)
    out = {}
    for name, enc in (("plain", ""), ("irpe-k", IRPE_K)):
        torch.manual_seed(0)
        model, criterion, post = build_detr(enc_rpe2d=enc, pretrained_backbone="none")
        rates = _throughput(model.to(device), criterion.to(device), post["bbox"], images, val,
                            device)
        for key, r in rates.items():
            out[f"{name} {key}"] = r
            print(f"{name + ' ' + key:24s} Detector {r['Detector']:6.1f} img/s   "
                  f"--eval loop {r['eval']:6.1f} img/s")
        torch.cuda.empty_cache()
    return out


def _run(cmd: list[str], log: Path) -> tuple[int, float, str]:
    start = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    log.write_text(res.stdout + res.stderr)
    return res.returncode, time.perf_counter() - start, res.stdout + res.stderr


def _final_ap(run_dir: Path, tag: str) -> float:
    return json.loads((run_dir / "eval" / f"{tag}.json").read_text())["bbox"]["AP"]


def demo_section(out: Path, work: Path) -> dict:
    data = work / "shapes"
    generate_shapes_dataset(data, num_train=1000, num_val=100, image_size=128)
    run_dir, eval_dir = work / "demo", work / "demo_eval"
    common = [*DEMO_FLAGS, "--train_json", str(data / "annotations/instances_train.json"),
              "--train_images", str(data / "train"),
              "--val_json", str(data / "annotations/instances_val.json"),
              "--val_images", str(data / "val")]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1"]
    rc, seconds, text = _run([*torchrun, "main.py", *common, "--output_dir", str(run_dir)],
                             out / "demo_train.log")
    res = {"train_rc": rc, "train_seconds": seconds}
    print(f"demo preset on the GPU (torchrun, 1 process): exit {rc} in {seconds:.0f} s")
    if rc != 0:
        print(text[-3000:])
        return res
    written = sorted(p.name for p in run_dir.iterdir())
    ckpt = run_dir / "checkpoint.pth"
    res.update(written=written, ap=_final_ap(run_dir, max(
        (p.stem for p in (run_dir / "eval").glob("[0-9]*.json")), key=int)))
    rc, seconds, text = _run([*torchrun, "main.py", *common, "--eval", "--resume", str(ckpt),
                              "--output_dir", str(eval_dir)], out / "demo_eval.log")
    res.update(eval_rc=rc, eval_seconds=seconds)
    if rc == 0:
        res["eval_ap"] = _final_ap(eval_dir, "eval")
    else:
        print(text[-3000:])
    res["amp"] = {amp: _amp_epoch(torchrun, common, amp, out, work) for amp in ("bf16", "fp16")}
    res["fp32_epoch0_loss"] = _epoch0_loss(run_dir)
    return res


def _epoch0_loss(run_dir: Path) -> float:
    return json.loads((run_dir / "log.txt").read_text().splitlines()[0])["train_loss"]


def _amp_epoch(torchrun: list, common: list, amp: str, out: Path, work: Path) -> dict:
    """The first epoch of the demo run again, under ``--amp``."""
    run_dir = work / f"demo_{amp}"
    rc, seconds, text = _run([*torchrun, "main.py", *common, "--epochs", "1", "--lr_drop", "1",
                              "--amp", amp, "--output_dir", str(run_dir)],
                             out / f"demo_{amp}.log")
    print(f"demo preset, 1 epoch with --amp {amp}: exit {rc} in {seconds:.0f} s")
    if rc != 0:
        print(text[-3000:])
        return {"rc": rc}
    return {"rc": rc, "seconds": seconds, "epoch0_loss": _epoch0_loss(run_dir)}


def report_demo(res: dict) -> list[dict]:
    rows = [verdict("demo training run", res.get("train_rc") == 0,
                     f"{res.get('train_seconds', 0):.0f} s, final AP {res.get('ap')}")]
    if "written" in res:
        need = {"checkpoint.pth", "log.txt"}
        rows.append(verdict("checkpoint and log written", need <= set(res["written"]),
                             ", ".join(res["written"])))
        rows.append(verdict("--eval --resume reproduces the AP",
                             res.get("eval_ap") is not None
                             and abs(res["eval_ap"] - res["ap"]) <= 1e-4,
                             f"{res.get('eval_ap')} vs {res['ap']}"))
    for amp, r in res.get("amp", {}).items():
        ok = r["rc"] == 0
        detail = f"exit {r['rc']}"
        if ok:
            diff = abs(r["epoch0_loss"] - res["fp32_epoch0_loss"]) / res["fp32_epoch0_loss"]
            ok = diff <= AMP_EPOCH_LOSS_RTOL
            detail += (f", epoch-0 training loss {r['epoch0_loss']:.4f} vs fp32 "
                       f"{res['fp32_epoch0_loss']:.4f} (relative {diff:.4f}, limit "
                       f"{AMP_EPOCH_LOSS_RTOL})")
        rows.append(verdict(f"main.py --amp {amp}, one demo epoch", ok, detail))
    return rows
