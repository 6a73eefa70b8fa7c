"""What the main process records after each epoch: a JSON line in ``log.txt`` (the official
keys), TensorBoard scalars when ``tensorboard`` is installed, and a progress line."""

from __future__ import annotations

import json
import time
from pathlib import Path

from detr_irpe.files import write_text


def _tensorboard(output_dir: Path | None):
    if output_dir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed: optional
        return None
    return SummaryWriter(str(output_dir / "tensorboard"))


def _epoch_of(line: str) -> int | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry.get("epoch") if isinstance(entry, dict) else None


def repair_log(path: Path, start_epoch: int) -> None:
    """Keep in ``log.txt`` only the whole lines of the epochs before ``start_epoch`` (those
    the checkpoint the run starts from holds): a line torn by a crash, and lines of epochs
    that will be trained again, are dropped (atomically, with a note)."""
    if not path.exists():
        return
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    kept = [line for line in lines if line.endswith("\n")
            and (epoch := _epoch_of(line)) is not None and epoch < start_epoch]
    if len(kept) == len(lines):
        return
    write_text(path, "".join(kept))
    print(f"{path}: dropped {len(lines) - len(kept)} line(s) that the checkpoint does not "
          f"cover (a line cut by a crash, or epochs from {start_epoch} on, trained again)",
          flush=True)


class EpochLog:
    def __init__(self, output_dir: Path | None, start_epoch: int, plan):
        """``plan``: the run's :class:`~detr_irpe.training.budget.Plan` (its epochs may change)."""
        self.output_dir, self.start_epoch, self.plan = output_dir, start_epoch, plan
        if output_dir is not None:
            repair_log(output_dir / "log.txt", start_epoch)
        self.writer = _tensorboard(output_dir)
        self.start = time.time()

    @property
    def seconds(self) -> float:
        return time.time() - self.start

    def write(self, epoch: int, log: dict, ap: float | None, best_ap: float) -> None:
        if self.output_dir is not None:
            with open(self.output_dir / "log.txt", "a") as f:
                f.write(json.dumps(log) + "\n")
        if self.writer is not None:
            for k, v in log.items():
                if isinstance(v, (int, float)):
                    self.writer.add_scalar(k, v, epoch)
            if ap is not None:
                self.writer.add_scalar("test_AP", ap, epoch)
        shown = f", AP {ap:.4f} (best {best_ap:.4f})" if ap is not None else ""
        epochs_left = self.plan.epochs - epoch - 1
        left = self.seconds / (epoch + 1 - self.start_epoch) * epochs_left
        print(f"epoch {epoch} done in {self.seconds:.0f}s total{shown}; about {left:.0f}s "
              f"({epochs_left} epochs) left", flush=True)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
