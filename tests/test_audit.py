"""`recurstudy audit`: passes on an untouched run (the whole workflow re-run from clean gives the
same bytes), fails naming the file when one byte of an input table changes, and names an output
that differs."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from recurstudy.audit import compare_outputs
from recurstudy.provenance import sha256_file

RECURSTUDY = Path(sys.executable).with_name("recurstudy")


def _audit(manifest: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(RECURSTUDY), "audit", str(manifest), "--cores", "2"],
        capture_output=True,
        text=True,
        timeout=1500,
    )


def test_manifest_contents(demo_report):
    m = json.loads((demo_report / "reports/manifest.json").read_text())
    roles = {e["role"] for e in m["inputs"]}
    assert {"data:participants", "data:episodes", "data:pain_scores", "config", "lock"} <= roles
    paths = [e["path"] for e in m["outputs"]]
    assert paths == sorted(paths)
    assert "reports/report.html" in paths and "results/estimates.csv" in paths
    assert "reports/manifest.json" not in paths and "reports/run_info.json" not in paths
    assert not any(p.startswith(("results/benchmarks/", ".snakemake")) for p in paths)
    assert all(not Path(e["path"]).is_absolute() for e in m["inputs"] + m["outputs"])
    assert (
        m["versions"]["pandas"]
        and len(m["source_commit"]) in (7, 40)
        or m["source_commit"] == "unknown"
    )
    # outputs hashed as they are on disk
    for e in m["outputs"][:5]:
        assert sha256_file(demo_report / e["path"]) == e["sha256"]
    # run-specific facts live only in run_info.json
    text = (demo_report / "reports/manifest.json").read_text()
    assert str(demo_report) not in text and "host" not in text


def test_audit_passes_on_untouched_run(demo_report):
    proc = _audit(demo_report / "reports/manifest.json")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "audit OK" in proc.stdout


def test_audit_fails_on_one_changed_byte(demo_report, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(demo_report, run, ignore=shutil.ignore_patterns(".snakemake"))
    target = run / "cohort/episodes.csv"
    data = bytearray(target.read_bytes())
    i = data.index(b"\n") + 10  # a byte inside the first data row
    data[i] = ord("7") if data[i] != ord("7") else ord("8")
    target.write_bytes(bytes(data))
    proc = _audit(run / "reports/manifest.json")
    assert proc.returncode == 1
    assert "input changed: cohort/episodes.csv" in proc.stdout
    assert "participants.csv" not in proc.stdout


def test_compare_outputs_names_the_file(demo_report, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(demo_report, run, ignore=shutil.ignore_patterns(".snakemake", "screenshot.png"))
    manifest = json.loads((run / "reports/manifest.json").read_text())
    assert compare_outputs(manifest, run) == []
    (run / "results/claims.csv").write_text("changed\n")
    (run / "reports/tables/rates.csv").unlink()
    assert compare_outputs(manifest, run) == [
        "missing: reports/tables/rates.csv",
        "differs: results/claims.csv",
    ]
