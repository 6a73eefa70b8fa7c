# Quick start: `make run` (demo job) and `make test` (test suite).
# Both create .venv on first use and install the pinned requirements into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint clean-venv bytecode

# The venv's bytecode is written once, here, on both cores: where PYTHONDONTWRITEBYTECODE
# is set (as on our development machines) Python never caches it, and each process compiled
# torch again at import (11 s for torch and torchvision instead of 3.6 s; make test took
# 5 min 35 s before, 3 min 53 s to 4 min 29 s after).  About 20 s on 2 cores; pip's own
# --compile is serial.  Its status is ignored: torch ships one test module in Python 3.12
# syntax that stays uncompiled and unused.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $(STAMP)

# The project's own bytecode, for the same reason, before each job: the tests start many
# processes that import it (a second each without it).  Python checks each file's time
# stamp, so an edited module is compiled again, never read stale.
bytecode: $(STAMP)
	$(PY) -m compileall -q detr_irpe tools benchmarks main.py > /dev/null

run: bytecode
	$(PY) tools/make_shapes_dataset.py --out datasets/shapes --num_train 1000 --num_val 100 --image_size 128
	$(PY) main.py --config configs/cpu_demo.toml --overwrite

test: bytecode
	$(PY) -m pytest -q -m "not sweep and not inductor"

# The long checks: the hostile sweep (tests marked sweep: kill -9 at random instants of
# training, then --resume auto must give the uninterrupted run; kill -9 while a checkpoint
# is written; a full disk; SIGTERM and SIGINT to a process group; a two-process run resumed
# bit for bit; two processes against one accumulating their batches) and the
# compiled step against the eager one and the compile benchmark (marked inductor).  A few
# minutes; CI runs them after `make test`.
.PHONY: sweep
sweep: bytecode
	$(PY) -m pytest -q -m "sweep or inductor"

lint: $(STAMP)
	$(PY) -m pip install --quiet ruff==0.17.6
	$(VENV)/bin/ruff check detr_irpe tools benchmarks tests main.py

clean-venv:
	rm -rf $(VENV)

# The fast part of the suite: leaves out the tests marked slow (main.py, tools or Python in
# a subprocess, torchrun/DDP, signals).  `make test` runs all but the sweep.
.PHONY: test-fast
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not sweep and not inductor"

# The peer a user would pick instead: Ultralytics YOLOv8n from scratch for MINUTES on
# DATASET (laid out as tools/make_trees_dataset.py writes it), in a venv of its own (not a
# dependency of this project); its detections land in PEER_OUT/detections.json, to be
# scored with tools/score.py.  Its venv is a CUDA build of torch too: about 6 GB.
PEER_VENV := .peer-venv
DATASET ?= datasets/trees_dev
MINUTES ?= 10
PEER_OUT ?= output/peer
$(PEER_VENV)/.installed:
	test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install --quiet ultralytics==8.4.190
	touch $@

.PHONY: peer
peer: $(PEER_VENV)/.installed $(STAMP)
	$(PEER_VENV)/bin/python tools/peer_yolov8n.py --dataset $(DATASET) --minutes $(MINUTES) --out $(PEER_OUT)
	$(PY) tools/score.py --json $(DATASET)/annotations/val.json --detections $(PEER_OUT)/detections.json
