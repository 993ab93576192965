"""Interrupted and read-only runs.

A run killed with SIGKILL (its whole process group, as a power cut would) while a model fit is
running (Snakemake has marked an output under results/models/ incomplete) is completed by the
next plain `snakemake` call after `--unlock` (the workflow's default profile passes
--rerun-incomplete); every file under results/ and reports/, the manifest included, is then
byte-identical to a fresh uninterrupted run of the same config, and the completed run passes
`recurstudy audit --no-rerun`. A run folder where nothing can be written stops with one line
naming it, not a PermissionError traceback.
"""

import base64
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_rerun import _config, _digests, _new_run, _snakemake, _write

from recurstudy.provenance import writable_problem

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
RECURSTUDY = Path(sys.executable).with_name("recurstudy")


def _start(run: Path) -> subprocess.Popen:
    env = dict(os.environ, PATH=f"{SNAKEMAKE.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(run)]
    cmd += ["--configfile", str(run / "config.yaml"), "--cores", "2"]
    return subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )


def _incomplete(run: Path) -> set[str]:
    """The outputs Snakemake has marked incomplete (jobs started and not finished): the files
    of .snakemake/incomplete/ are their paths, URL-safe base64, long ones split at '@'."""
    base = run / ".snakemake" / "incomplete"
    out = set()
    if not base.is_dir():
        return out
    for p in base.rglob("*"):
        if p.is_file() and p.name != "migration_underway":
            key = "".join(part.lstrip("@") for part in p.relative_to(base).parts)
            try:
                out.add(base64.urlsafe_b64decode(key).decode())
            except ValueError:
                continue
    return out


@pytest.mark.workflow
def test_killed_run_completes_on_the_next_call(tmp_path):
    config = _config(tmp_path)
    run = tmp_path / "killed"
    shutil.copytree(REPO / "data/demo", run / "cohort")
    _write(run, config)
    proc = _start(run)
    deadline = time.monotonic() + 300
    fitting: set[str] = set()
    while time.monotonic() < deadline and proc.poll() is None:
        fitting = {p for p in _incomplete(run) if "results/models/" in p}
        if fitting:  # a model job is running
            break
        time.sleep(0.02)
    assert fitting and proc.poll() is None, "the run ended before a model job started"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole job tree, as a power cut would
    proc.wait(timeout=60)
    assert fitting <= _incomplete(run)  # killed during the fit: its outputs are incomplete
    assert not (run / "reports" / "manifest.json").exists()

    # The kill leaves Snakemake's lock (it cannot tell a killed run from a running one): the
    # README's path is to unlock, then run as usual; --rerun-incomplete comes from the profile.
    locked = _snakemake(run)
    assert locked.returncode != 0 and "--unlock" in locked.stderr
    assert _snakemake(run, "--unlock").returncode == 0
    done = _snakemake(run)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "IncompleteFilesException" not in done.stderr
    assert _incomplete(run) == set()

    fresh = _new_run(tmp_path, "fresh", config)
    ours, theirs = _digests(run), _digests(fresh)
    assert "reports/manifest.json" in ours and any(p.startswith("results/models/") for p in ours)
    assert sorted(ours) == sorted(theirs)
    assert [p for p in ours if ours[p] != theirs[p]] == []
    audit = subprocess.run(
        [str(RECURSTUDY), "audit", str(run / "reports/manifest.json"), "--no-rerun"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_writable_problem_names_the_folder(tmp_path, monkeypatch):
    assert writable_problem(tmp_path) is None
    assert list(tmp_path.iterdir()) == []  # the probe file is removed

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", refuse)
    assert writable_problem(tmp_path) == (
        f"the run folder {tmp_path} is not writable (Permission denied): every output goes "
        "under it; make it writable or run on a copy"
    )


@contextmanager
def _read_only(folder: Path):
    """`folder` made unwritable for this process: chmod for a user; for root, whom chmod does not
    stop, the immutable attribute (chattr +i; skipped where the file system has none)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    proc = subprocess.run([chattr or "chattr", "+i", str(folder)], capture_output=True, text=True)
    if chattr is None or proc.returncode != 0:
        pytest.skip(f"root, and chattr +i failed here: {proc.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)


def test_read_only_run_folder_one_line(tmp_path):
    """Stops while the Snakefile is read (no job runs): one line naming the folder."""
    run = tmp_path / "archived"
    shutil.copytree(REPO / "data/demo", run / "cohort")
    _write(run, _config(tmp_path))
    with _read_only(run):
        try:
            (run / "probe").touch()
        except OSError:
            pass
        else:
            pytest.fail("the folder is still writable")
        proc = _snakemake(run)
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("recurstudy")]
    assert ours == [
        f"recurstudy: the run folder {run} is not writable "
        f"({'Operation not permitted' if os.geteuid() == 0 else 'Permission denied'}): "
        "every output goes under it; make it writable or run on a copy"
    ], proc.stderr
    assert "Traceback" not in proc.stderr and "PermissionError" not in proc.stderr
    assert sorted(p.name for p in run.iterdir()) == ["cohort", "config.yaml"]
