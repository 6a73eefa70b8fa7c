"""Speed of our DETR-R50 + iRPE-K against the official DETR-with-iRPE code, side by side.

    git clone https://github.com/microsoft/Cream
    pip install easydict                 # the official code's one import we do not have
    python -m benchmarks.compare_official --official Cream/iRPE/DETR-with-iRPE --reps 5

Each model runs in a process of its own, as its user runs it: ours with the process
settings ``main.py`` applies (``detr_irpe/machine/memory.py``), the official code with the
defaults of a plain ``python`` (``--official_settings ours`` gives it ours too, which
leaves only the code's difference).  One parent drives the processes in interleaved
rounds, in a rotating order (``benchmarks.timing.interleaved``, timed from the
parent), so that the machine's drifts hit them alike; only one process
works at a time, with the same thread count.  A second process of ours gives the noise
floor ("ours (again)", ideally 1.00); a fourth one times inference with the ResNet
compiled (``Detector.compile``, "ours (compiled)").

Two phases, each with processes of its own:

1. Inference, as ``tools/predict.py`` and an ``--eval`` run take it: processes that only
   infer (ours, official, ours again, ours compiled), batch-1 inference of 800 x 1066, no
   autograd.  Both models hold the same weights (the official model's, loaded into ours
   strictly), and their outputs are compared before anything is timed.
2. Training, as each side's ``main.py`` takes it: one step (forward, matching, losses,
   backward, clipping, AdamW) on two images of 800 x 1066 and 800 x 1201 with three boxes
   each; then batch-1 inference again in the same processes, as the evaluation inside a
   training run takes it (a process that has trained holds a larger heap, which changes
   the cost of a plain ``python``'s allocations: docs/benchmarks.md).

Prints the medians and the official/ours speed-ups and writes them to ``--json``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

INFERENCE_SIDES = {"ours": "ours", "official": "official", "ours (again)": "ours",
                   "ours (compiled)": "compiled"}
TRAINING_SIDES = {"ours": "ours", "official": "official", "ours (again)": "ours"}
# Largest difference of the eval outputs (class logits, boxes) that is float32 rounding.
SAME_OUTPUTS = 1e-3


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official", required=True,
                        help="folder Cream/iRPE/DETR-with-iRPE of a microsoft/Cream checkout")
    parser.add_argument("--reps", type=int, default=5,
                        help="timed training rounds; inference gets three times as many")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed training steps of each process before the rounds (the "
                             "first steps of a process are slow while its heap grows)")
    parser.add_argument("--threads", type=int, default=None, help="default: all cores")
    parser.add_argument("--official_settings", choices=("default", "ours"), default="default",
                        help="process settings of the official side (default: a plain python)")
    parser.add_argument("--json", default="output/compare_official.json")
    parser.add_argument("--serve", choices=("ours", "official", "compiled"), help=argparse.SUPPRESS)
    parser.add_argument("--outputs", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def serve(args) -> int:
    """A worker process: build one side, save its eval outputs, then run each "infer" or
    "train" line of stdin and answer "done" when it has finished (the parent times it)."""
    settings = args.official_settings if args.serve == "official" else "ours"
    if settings == "ours":
        from detr_irpe.machine.memory import configure_memory

        configure_memory()  # before torch is imported, as main.py does
    import torch

    from benchmarks import official as side
    from benchmarks.workload import IRPE_K, train_step_fn

    torch.set_num_threads(args.threads)
    official_main, official_models = side.import_official(args.official)
    model, criterion, optimizer, max_norm = side.build_official(
        official_main, official_models, IRPE_K)
    if args.serve == "official":
        step = side.official_step_fn(model, criterion, optimizer, max_norm)
    else:
        model, criterion = side.ours_like(model, IRPE_K)
        step = train_step_fn(model, criterion, torch.device("cpu"))
    if args.serve == "compiled":
        from detr_irpe.training.compiled import compile_for_inference

        compile_for_inference(model.eval())  # compiles at the first forward, below
    forward = side.forward_fn(model)
    torch.save({k: v for k, v in forward().items() if k.startswith("pred_")}, args.outputs)
    print("ready", flush=True)
    for line in sys.stdin:
        model.train(line.strip() == "train")
        step() if line.strip() == "train" else forward()
        print("done", flush=True)
    return 0


class Worker:
    """One side in a process of its own, driven over its stdin and stdout."""

    def __init__(self, side: str, args, outputs: Path):
        from detr_irpe.machine.memory import GLIBC_VARIABLES

        env = dict(os.environ)
        if side == "official" and args.official_settings == "default":
            for name in GLIBC_VARIABLES:
                env.pop(name, None)
        cmd = [sys.executable, "-m", "benchmarks.compare_official", "--serve", side,
               "--official", args.official, "--threads", str(args.threads),
               "--official_settings", args.official_settings, "--outputs", str(outputs)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=Path(__file__).resolve().parents[1])
        self.outputs = outputs
        for line in self.proc.stdout:  # the official code prints while it builds its model
            if line.strip() == "ready":
                return
            print(f"[{side}] {line.rstrip()}")
        raise SystemExit(f"the {side} process did not start (its error is above)")

    def run(self, what: str) -> None:
        """Run ``what`` (infer or train) and wait for it."""
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        if not self.proc.stdout.readline():
            raise SystemExit(f"a worker process ended during '{what}' (its error is above)")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def largest_difference(workers: dict) -> float:
    import torch

    base = torch.load(workers["official"].outputs, weights_only=True)
    worst = 0.0
    for w in workers.values():
        out = torch.load(w.outputs, weights_only=True)
        worst = max(worst, *((out[k] - base[k]).abs().max().item() for k in base))
    return worst


def report(result: dict, args, difference: float) -> dict:
    # official time / each of our variants' time (ratios taken within the rounds).
    speedups = {s: {name: rows["official"]["ratio"] / row["ratio"] for name, row in rows.items()
                    if name != "official"} for s, rows in result.items()}
    print(f"outputs of the same weights differ by at most {difference:.2e}; {args.threads} "
          f"threads; official process settings: {args.official_settings}")
    for section, rows in result.items():
        for name, row in rows.items():
            print(f"{section:24s} {name:15s} median {row['median_s']:7.3f} s   "
                  f"time / ours {row['ratio']:.3f}")
    for section, ours in speedups.items():
        print(f"speed-up over the official code, {section}: "
              + ", ".join(f"{name} {v:.2f}x" for name, v in ours.items()))
    return {"threads": args.threads, "official_settings": args.official_settings,
            "output_difference": difference, "speedup": speedups, "times": result}


def compare(args) -> int:
    from detr_irpe.files import write_json

    with tempfile.TemporaryDirectory(prefix="compare_official-") as folder:
        inference, difference = run_phase(INFERENCE_SIDES, args, Path(folder), training=False)
        if inference is None:
            return 1
        training, _ = run_phase(TRAINING_SIDES, args, Path(folder), training=True)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, report({**inference, **training}, args, difference))
    return 0


def run_phase(sides: dict, args, folder: Path, training: bool) -> tuple[dict | None, float]:
    """Start a process per side, check that their outputs agree, time the phase's rounds
    (see the module docstring) and stop the processes.  Returns ({section: timings},
    largest output difference), or (None, difference) when the outputs differ."""
    import torch

    from benchmarks.timing import interleaved, summarise

    workers = {}
    try:
        for i, (name, side) in enumerate(sides.items()):
            workers[name] = Worker(side, args, folder / f"{training}-{i}.pt")
        difference = largest_difference(workers)
        if difference > SAME_OUTPUTS:
            print(f"the outputs differ by {difference:.2e}, more than float32 rounding: "
                  "the two sides compute different functions; nothing timed", file=sys.stderr)
            return None, difference
        sections = [("inference_batch1", "infer", 3 * args.reps)]
        if training:
            for _ in range(args.warmup):
                for w in workers.values():
                    w.run("train")
            # The training steps change the weights; the outputs were compared before them.
            sections = [("train_step", "train", args.reps),
                        ("inference_after_training", "infer", 3 * args.reps)]
        return {section: summarise(interleaved(
            {name: lambda w=w, what=what: w.run(what) for name, w in workers.items()},
            reps, torch.device("cpu")), base="ours")
            for section, what, reps in sections}, difference
    finally:
        for w in workers.values():
            w.close()


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads is None:
        from detr_irpe.machine.cpu import available_cores

        args.threads = available_cores()
    return serve(args) if args.serve else compare(args)


if __name__ == "__main__":
    sys.exit(main())
