"""One run per --output_dir: a second run stops naming the first one's pid, and a fresh run
does not write into a folder holding an old run unless --overwrite says so."""

import os
import subprocess
import sys

import pytest
from helpers import ROOT, TINY_FLAGS, data_flags, shapes_dataset

import main as main_module
from detr_irpe.training.run_folder import LOCK_FILE, lock_run_folder, start_fresh


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes_dataset(tmp_path_factory.mktemp("data"), num_train=2, num_val=2,
                          image_size=48, seed=1)


def _train(data, out, *extra):
    return main_module.main([*TINY_FLAGS, *data_flags(data), "--epochs", "1",
                             "--output_dir", str(out), *extra])


def test_a_second_run_in_a_locked_folder_stops_naming_the_first(data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with lock_run_folder(out):
        with pytest.raises(RuntimeError, match=rf"in use by another run \(pid {os.getpid()}\)"):
            _train(data, out)
    assert not (out / "log.txt").exists()


@pytest.mark.slow
def test_the_lock_names_the_pid_of_a_run_in_another_process(data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom detr_irpe.training.run_folder import "
         "lock_run_folder\nwith lock_run_folder(__import__('pathlib').Path(sys.argv[1])):\n"
         "    print('locked', flush=True); time.sleep(120)", str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match=rf"pid {holder.pid}\)"):
            _train(data, out)
    finally:
        holder.kill()
        holder.wait()
    # The lock goes with the process that held it, however it ended.
    with lock_run_folder(out):
        assert (out / LOCK_FILE).read_text().strip() == str(os.getpid())


@pytest.mark.parametrize("old", ["log.txt", "checkpoint.pth"])
def test_a_fresh_run_refuses_a_folder_that_holds_a_run(data, tmp_path, old):
    out = tmp_path / "out"
    out.mkdir()
    (out / old).write_text("the old run\n")
    with pytest.raises(ValueError, match=f"already holds a run \\({old}\\).*--overwrite"):
        _train(data, out)
    assert (out / old).read_text() == "the old run\n"


def test_overwrite_deletes_the_old_run_files(tmp_path):
    for name in ("log.txt", "checkpoint.pth", "checkpoint_best.pth", "notes.md"):
        (tmp_path / name).write_text("old")
    start_fresh(tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.md"]
    start_fresh(tmp_path, overwrite=False)  # nothing left to refuse
