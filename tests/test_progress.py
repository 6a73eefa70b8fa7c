"""Progress lines: when a line is due, and what it says (a fake clock)."""

import pytest

from detr_irpe import progress as progress_module
from detr_irpe.progress import Progress


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: now[0])
    return now


def _run(clock, steps, **kwargs):
    lines = []
    p = Progress("Epoch 0", len(steps), log=lines.append, **kwargs)
    for done, at in enumerate(steps, start=1):
        clock[0] = 100.0 + at
        p.update(done, lambda: {"loss": 0.5})
    return lines


def test_every_n_items_and_the_last(clock):
    lines = _run(clock, [1, 2, 3, 4, 5, 6, 7], every=3)
    assert [line.split()[2] for line in lines] == ["[3/7]", "[6/7]", "[7/7]"]
    # 3 items in 3 s: 1 it/s, 4 left
    assert lines[0] == "Epoch 0 [3/7] 1.00 it/s  eta 4s  loss 0.5000"


def test_at_most_one_line_per_min_seconds_but_the_first_and_last(clock):
    # an item every 2 s; a line at most every 5 s, the first one at once
    lines = _run(clock, [2, 4, 6, 8, 10, 12, 14], min_seconds=5.0, first=True, unit="images")
    assert [line.split()[2] for line in lines] == ["[1/7]", "[4/7]", "[7/7]"]
    assert "0.50 images/s" in lines[0]


def test_disabled_prints_nothing_and_values_are_not_read(clock):
    def values():
        raise AssertionError("read although nothing is printed")

    lines = []
    p = Progress("Test", 2, enabled=False, log=lines.append)
    p.update(1, values)
    p.update(2, values)
    assert lines == []
