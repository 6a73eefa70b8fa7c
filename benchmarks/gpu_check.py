"""Checks of the CUDA path, in one run of a few minutes on one GPU.

    python -m benchmarks.gpu_check --out gpu_check          # everything
    python -m benchmarks.gpu_check --out gpu_check --only tests,train

Sections (each prints its figures and PASS/FAIL, and all go to ``<out>/gpu_check.json``):

- ``tests``: the device-parametrised attention tests (every backend, float32 and autocast,
  forward and backward with the table gradients, against the float64 CPU reference);
- ``train``: a DETR-R50 training step at COCO sizes (two images, 800x1066 + 800x1201) in
  fp32, bf16 and fp16 autocast: median step time, peak GPU memory, iRPE-K / plain (variants
  interleaved; a second plain model gives the noise floor), and the AMP losses against fp32;
- ``profile``: GPU time per fp32 training step from the profiler, plain and iRPE-K, with
  the kernels that take it (``<out>/profile.txt``);
- ``inference``: images/s of ``Detector.predict`` and of the ``--eval`` loop for batch 1
  and 8, plain and iRPE-K, fp32 and bf16;
- ``demo``: the CPU demo preset (``configs/cpu_demo.toml``) on the GPU through
  ``torchrun --nproc_per_node=1`` (NCCL): time, AP, the checkpoint and log written, and
  ``--eval --resume`` of the checkpoint reproducing the AP; then its first epoch again with
  ``--amp bf16`` and ``--amp fp16``, whose mean training loss must stay near fp32's.

- ``scaling``: training images/s of DETR-R50 + iRPE-K at batch 2, 8 and 16 and the
  GPU-busy fraction (profiler kernel time / wall time), with the targets: busy >= 80 % at
  batch 16 and images/s at 16 >= 2.5 x batch 2's (``benchmarks.gpu_training``);
- ``compile``: the training step at batch 16 eager, with ``--compile`` and with
  ``--compile --size_buckets 3``;
- ``reruns``: ``--dense_aux_coef``, ``--backbone_stride 16``, ``--ema``, export
  (TorchScript and ONNX) and faster-coco-eval run on the device
  (``benchmarks.gpu_reruns``).

A section that fails is reported and the next one runs.  ``--device cpu --tiny`` runs the
scaling, compile and reruns sections on the CPU with a tiny model (a check of the tool
itself): the GPU targets are then printed as NOT MEASURED, not as PASS or FAIL.

    python -m benchmarks.gpu_check --out output/gpu_check_cpu --device cpu --tiny \
        --only scaling,compile,reruns
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

from detr_irpe.files import writable_folder
from detr_irpe.machine.memory import configure_memory
from detr_irpe.options import input_error

SECTIONS = ("tests", "train", "profile", "inference", "demo", "scaling", "compile", "reruns")
# The sections that also run on the CPU (``--device cpu``).
CPU_SECTIONS = ("scaling", "compile", "reruns")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="output/gpu_check", help="folder for results and logs")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--reps", type=int, default=20, help="timed rounds per variant")
    parser.add_argument("--device", default="cuda",
                        help=f"the CUDA device to check, or cpu (only {', '.join(CPU_SECTIONS)})")
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny model and small images (to check the tool on a CPU)")
    args = parser.parse_args(argv)
    configure_memory()  # before torch is imported
    import torch

    from benchmarks import gpu, gpu_reruns, gpu_training

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it on a machine with a GPU", file=sys.stderr)
        return 2
    try:
        out = writable_folder(args.out, "--out")
    except OSError as err:
        return input_error(err)
    only = args.only.split(",")
    if device.type != "cuda" and set(only) - set(CPU_SECTIONS):
        print(f"gpu_check: --device {args.device} runs only --only {','.join(CPU_SECTIONS)}",
              file=sys.stderr)
        return 2
    gpu_name = torch.cuda.get_device_name() if device.type == "cuda" else None
    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "gpu": gpu_name, "device": str(device), "tiny": args.tiny,
              "torch": torch.__version__, "cuda": torch.version.cuda, "checks": []}
    print(f"# {report['date']}  {gpu_name or 'no GPU: GPU figures are NOT MEASURED'}  "
          f"torch {report['torch']}  CUDA {report['cuda']}")
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    steps = {
        "tests": lambda: gpu.tests_section(out),
        "train": lambda: gpu.train_section(device, args.reps),
        "profile": lambda: gpu.profile_section(device, out),
        "inference": lambda: gpu.inference_section(device, work / "photo_sized"),
        "demo": lambda: gpu.demo_section(out, work),
        "scaling": lambda: gpu_training.scaling_section(device, min(args.reps, 5), args.tiny),
        "compile": lambda: gpu_training.compile_check_section(device, min(args.reps, 5),
                                                              args.tiny),
        "reruns": lambda: gpu_reruns.reruns_section(device, args.tiny),
    }
    checks = {"train": gpu.report_train, "demo": gpu.report_demo,
              "scaling": gpu_training.report_scaling, "compile": gpu_training.report_compile,
              "reruns": gpu_reruns.report_reruns,
              "tests": lambda r: [gpu.verdict("attention tests on CUDA", r["passed"], r["summary"])]}
    for name in only:
        print(f"\n## {name}", flush=True)
        start = time.perf_counter()
        try:
            report[name] = steps[name]()
            report["checks"] += checks.get(name, lambda r: [])(report[name])
        except Exception:
            text = traceback.format_exc()
            print(text)
            report[name] = {"error": text}
            report["checks"].append(gpu.verdict(name, False, text.strip().splitlines()[-1]))
        print(f"({name}: {time.perf_counter() - start:.0f} s)", flush=True)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    failed = [c["check"] for c in report["checks"] if c["passed"] is False]
    unmeasured = [c["check"] for c in report["checks"] if c["passed"] is None]
    print(f"\n{len(report['checks']) - len(failed) - len(unmeasured)} passed, {len(failed)} "
          f"failed, {len(unmeasured)} not measured" + (" (no GPU)" if unmeasured else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
