"""Interrupted runs: a run killed (SIGKILL) in the middle of the model fits is completed by the
next plain `snakemake` call (the workflow's default profile passes --rerun-incomplete), and its
outputs are then byte-identical to those of an uninterrupted run. A read-only run folder gets a
clear message."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_rerun import _config, _digests, _new_run, _snakemake, _write

pytestmark = pytest.mark.workflow

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def _start(run: Path) -> subprocess.Popen:
    env = dict(os.environ, PATH=f"{SNAKEMAKE.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(run)]
    cmd += ["--configfile", str(run / "config.yaml"), "--cores", "2"]
    return subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )


def test_killed_run_completes_on_the_next_call(tmp_path):
    import shutil

    config = _config(tmp_path)
    run = tmp_path / "killed"
    shutil.copytree(REPO / "data/demo", run / "cohort")
    _write(run, config)
    proc = _start(run)
    models = run / "logs" / "models"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if models.is_dir() and any(models.iterdir()):  # a model job has started
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before a model job started"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole job tree, as a power cut would
    proc.wait(timeout=60)
    assert not (run / "reports" / "manifest.json").exists()

    # The kill leaves Snakemake's lock (it cannot tell a killed run from a running one): the
    # README's path is to unlock, then run as usual; --rerun-incomplete comes from the profile.
    locked = _snakemake(run)
    assert locked.returncode != 0 and "--unlock" in locked.stderr
    assert _snakemake(run, "--unlock").returncode == 0
    done = _snakemake(run)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "IncompleteFilesException" not in done.stderr

    fresh = _new_run(tmp_path, "fresh", config)
    ours, theirs = _digests(run), _digests(fresh)
    assert sorted(ours) == sorted(theirs)
    assert [p for p in ours if ours[p] != theirs[p]] == []
