"""Speed and memory of iRPE, measured side by side in one run.

    python -m benchmarks.speed                 # everything (a few minutes on 2 CPU cores)
    python -m benchmarks.speed --quick         # attention only
    python -m benchmarks.speed --device cuda   # the same on a GPU
    python -m benchmarks.speed --eval_images 5000 --eval_dets 100   # COCO evaluation only
    python -m benchmarks.speed --compile       # training step: eager vs --compile (+ buckets)

Prints a table of ratios and writes the raw figures to ``--json``
(default ``output/benchmark.json``).  Sections:

1. encoder self-attention forward+backward at DETR's COCO shape (batch 2, 8 heads,
   d_model 256, 25 x 38 map, padding mask, dropout 0.1, train mode): plain attention vs
   iRPE-K and other iRPE variants, each backend;
2. a full DETR-R50 training step (forward, matching, losses, backward, AdamW step) on two
   images of 800 x 1066 and 800 x 1201, with and without iRPE-K; batch-1 inference;
3. FLOPs of that training step (torch.utils.flop_counter) and the achieved FLOP/s as a
   fraction of this machine's matrix-multiply peak, measured in the same run;
4. peak memory of the training step (high-water resident set, VmHWM, of a fresh process on CPU,
   ``torch.cuda.max_memory_allocated`` on GPU);
5. with ``--eval_images N``, instead of 1-4: COCO evaluation time, pycocotools vs
   faster-coco-eval, on a generated set (see ``benchmarks.coco_eval``);
6. with ``--compile``, instead of 1-4: the training step eager, with ``--compile`` and with
   ``--compile --size_buckets 3``, over batches of three sizes (see
   ``benchmarks.compiled``); ``--tiny`` runs it on a tiny model;
7. the targets of the speed work, each with its verdict (met / NOT MET / not checkable)
   and, where it is not met, the reason computed from the figures of the same run.

Each timing is the median of several repetitions after warm-up, with the variants
interleaved (in a rotating order) so that background load affects them alike; ratios are
medians of the within-round ratios.  A second copy of the plain variant is timed like the
others: its ratio to plain (ideally 1.000) is the noise floor of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from detr_irpe.machine.memory import configure_memory


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reps", type=int, default=5, help="timed rounds per variant")
    parser.add_argument("--quick", action="store_true", help="attention section only")
    parser.add_argument("--json", default="output/benchmark.json")
    parser.add_argument("--eval_images", type=int, default=0,
                        help="time COCO evaluation of this many generated images instead")
    parser.add_argument("--eval_dets", type=int, default=100, help="detections per image")
    parser.add_argument("--compile", action="store_true",
                        help="time the training step eager vs --compile vs --compile with buckets")
    parser.add_argument("--tiny", action="store_true",
                        help="with --compile: a tiny model and images (checks the tool, not speed)")
    parser.add_argument("--compile_backend", default="inductor",
                        help="torch.compile backend for --compile (eager: no code generation)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    memory = configure_memory()  # before torch is imported
    if args.eval_images:
        from benchmarks.coco_eval import print_report, time_backends

        print_report(time_backends(args.eval_images, args.eval_dets))
        return 0
    import torch

    from benchmarks.targets import print_targets, targets
    from detr_irpe.machine.cpu import configure_cpu

    settings = {**configure_cpu(), **memory}
    device = torch.device(args.device)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cpu_settings": settings,
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
    }
    print(f"# {report['date']}  {report['machine']}  device {report['device']}  "
          f"torch {report['torch']}  threads {torch.get_num_threads()}")
    print("CPU settings applied: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    if args.compile:
        from benchmarks.compiled import compile_section, print_compile

        report["compile"] = compile_section(device, args.reps, tiny=args.tiny,
                                            backend=args.compile_backend)
        print_compile(report["compile"])
    else:
        report["attention"] = attention(device, args.reps * 2)
        if not args.quick:
            report.update(model_and_cost(device, args.device, args.reps))
        report["targets"] = targets(report)
        print_targets(report["targets"])
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"\nraw figures: {out}")
    return 0


def attention(device, reps: int) -> dict:
    """Section 1, timed and printed."""
    from benchmarks.sections import attention_section

    attn = attention_section(device, reps)
    print("\n## Encoder self-attention fwd+bwd, B=2, 8 heads, d=256, 25x38, padded, train")
    print(f"{'variant':32s} {'median ms':>10s} {'x plain':>8s}")
    for name, r in attn.items():
        print(f"{name:32s} {r['median_s'] * 1e3:10.1f} {r['ratio']:8.3f}")
    return attn


def model_and_cost(device, device_name: str, reps: int) -> dict:
    """Sections 2-4, timed and printed: the report's train_step, inference_batch1,
    bucket_cache, flops and peak_memory_bytes."""
    from benchmarks.memory import memory_of_step
    from benchmarks.sections import flops_section, model_section
    from benchmarks.targets import OFFICIAL_S
    from benchmarks.workload import IRPE_K

    model = model_section(device, reps)
    print("\n## DETR-R50, two images 800x1066 + 800x1201")
    print(f"{'':20s} {'plain s':>9s} {'iRPE-K s':>9s} {'ratio':>7s}   "
          f"{'A/A: plain again / plain':>24s}")
    for label in ("train_step", "inference_batch1"):
        r = model[label]
        print(f"{label:20s} {r['plain']['median_s']:9.3f} {r['irpe-k']['median_s']:9.3f} "
              f"{r['irpe-k']['ratio']:7.3f}   {r['plain (again)']['ratio']:24.3f}")
    print("(ratios: median over rounds of the ratio within a round)")
    if device.type == "cpu":
        # Not side by side: the official code is not available here.  These are the
        # official figures quoted for "a machine like this one".
        print("vs the quoted official figures (another machine, not measured here):")
        for (label, name), quoted in OFFICIAL_S.items():
            ours = model[label][name]["median_s"]
            print(f"  {label} {name}: official {quoted:.2f} s, ours {ours:.3f} s "
                  f"-> {quoted / ours:.2f} x")
    fl = flops_section(device, {n: model["train_step"][n]["median_s"] for n in ("plain", "irpe-k")})
    print(f"\nmatmul peak {fl['matmul_peak_flops'] / 1e9:.1f} GFLOP/s")
    for n in ("plain", "irpe-k"):
        print(f"{n:8s} train step {fl[n]['train_step_flops'] / 1e9:8.1f} GFLOP, achieved "
              f"{fl[n]['achieved_flops'] / 1e9:6.1f} GFLOP/s = "
              f"{fl[n]['fraction_of_peak']:.2f} of peak")
    mem = {n: memory_of_step(enc, device_name) for n, enc in (("plain", ""), ("irpe-k", IRPE_K))}
    print(f"peak memory of the training step: plain {mem['plain'] / 2**30:.2f} GiB, "
          f"iRPE-K {mem['irpe-k'] / 2**30:.2f} GiB ({mem['irpe-k'] / mem['plain']:.3f} x)")
    return {**model, "flops": fl, "peak_memory_bytes": mem}


if __name__ == "__main__":
    sys.exit(main())
