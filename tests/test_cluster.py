"""The demo workflow on a real single-node SLURM cluster (Snakemake's SLURM executor), compared
byte for byte with a local run.

Run by ``make test-cluster`` (which sets RECURSTUDY_CLUSTER_TEST=1, installs slurm-wlm and munge
when root, and the executor plugin from the `slurm` extra); ``make test`` skips it. The cluster
is started by tests/cluster/start_slurm.sh in a state folder of its own and stopped by
stop_slurm.sh, which stops only those daemons. With no accounting database, the executor checks
job status with ``squeue --states=all`` (the cluster keeps finished jobs for MinJobAge = 600 s).
"""

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
START = REPO / "tests" / "cluster" / "start_slurm.sh"
STOP = REPO / "tests" / "cluster" / "stop_slurm.sh"

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.workflow,
    pytest.mark.skipif(
        os.environ.get("RECURSTUDY_CLUSTER_TEST") != "1",
        reason="starts a SLURM cluster: run `make test-cluster`",
    ),
]

# A small demo study: the claim's model and a few others, small power and bootstrap runs.
MODELS = [
    {"name": "km", "kind": "kaplan_meier"},
    {"name": "andersen_gill", "kind": "andersen_gill"},
    {"name": "negbin_rate", "kind": "negbin"},
    {"name": "pain", "kind": "mixed_pain"},
]
# What differs between two runs by design: run_info.json (host, wall time) and the benchmarks.
VARYING = re.compile(r"^(reports/run_info\.json|results/benchmarks/.*)$")


def _config() -> dict:
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["data"] = {
        "participants": "cohort/participants.csv",
        "episodes": "cohort/episodes.csv",
        "pain_scores": "cohort/pain_scores.csv",
    }
    config["models"] = MODELS
    config["adjust_for"] = ["age"]
    config["claims"][1]["model"] = "pain"
    config["power"] = {"replicates": 20, "chunk_size": 10, "seed": 7, "alpha": 0.05}
    config["bootstrap"] = {"replicates": 40, "chunk_size": 20, "seed": 11, "bca": True}
    return config


def _new_run(tmp: Path, name: str) -> Path:
    run = tmp / name
    shutil.copytree(REPO / "data/demo", run / "cohort")
    (run / "config.yaml").write_text(yaml.safe_dump(_config(), sort_keys=False))
    return run


def _snakemake(run: Path, env: dict, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(run)]
    cmd += ["--configfile", str(run / "config.yaml"), *extra]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=2400, env=env)
    return proc, time.monotonic() - t0


def _free_port_pair() -> int:
    """A port p with p and p + 1 free on localhost (slurmctld and slurmd)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port > 65000:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


@pytest.fixture(scope="module")
def slurm():
    """A running single-node cluster: its state folder (SLURM commands in STATE/bin)."""
    state = Path(tempfile.mkdtemp(prefix="rs-slurm-", dir="/tmp"))  # short: munge socket path
    env = dict(os.environ, RECURSTUDY_SLURM_PORT=str(_free_port_pair()))
    proc = subprocess.run(
        ["bash", str(START), str(state)], capture_output=True, text=True, timeout=900, env=env
    )
    if proc.returncode == 3:
        pytest.skip(f"no SLURM here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stdout + proc.stderr + _logs(state)
    yield state
    subprocess.run(["bash", str(STOP), str(state)], capture_output=True, timeout=120)
    shutil.rmtree(state, ignore_errors=True)


def _logs(state: Path) -> str:
    return "".join(p.read_text()[-2000:] for p in sorted((state / "log").glob("*.log")))


def _digests(run: Path) -> dict[str, str]:
    out = {}
    for top in ("results", "reports"):
        for path in sorted((run / top).rglob("*")):
            rel = path.relative_to(run).as_posix()
            if path.is_file() and not VARYING.match(rel):
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_demo_on_slurm_equals_local_run(slurm, tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    path = f"{state_bin(slurm)}{os.pathsep}{SNAKEMAKE.parent}{os.pathsep}{os.environ['PATH']}"
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    env["PATH"] = path

    local = _new_run(tmp_path, "local")
    proc, local_s = _snakemake(local, env, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-4000:]

    cluster = _new_run(tmp_path, "cluster")
    proc, slurm_s = _snakemake(
        cluster,
        env,
        "--profile",
        str(REPO / "profiles" / "slurm"),
        "--jobs",
        "4",
        "--slurm-no-account",
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "1",
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:] + _logs(slurm)
    print(f"demo (small settings): local {local_s:.0f} s, SLURM {slurm_s:.0f} s")

    # every job but the target rule went through SLURM, under the ids SLURM gave it
    ids = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    finished = re.findall(r"^Finished jobid: \d+ \(Rule: (\w+)\)", log, re.M)
    assert re.search(r"(\d+) of \1 steps \(100%\) done", log), log[-3000:]
    assert len(ids) == len([r for r in finished if r != "all"]) > 30, log[-3000:]
    queue = subprocess.run(
        [str(state_bin(slurm) / "squeue"), "--states=all", "--noheader", "--format=%i|%T"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    states = dict(line.split("|") for line in queue.split())
    assert {states.get(i) for i in ids} == {"COMPLETED"}, queue

    # the same bytes as the local run, every result and report (manifest included)
    a, b = _digests(local), _digests(cluster)
    assert "results/sensitivity/bootstrap.csv" in a and "results/sites/meta.csv" in a
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []


def state_bin(state: Path) -> Path:
    return state / "bin"
