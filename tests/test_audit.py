"""`recurstudy audit`: passes on an untouched run (the whole workflow re-run from clean gives the
same bytes; the suite's one full re-run); checks the run folder's own outputs (a changed byte, a
rewritten verdict, a deleted and an unlisted file are all named, with or without the re-run);
fails naming the file when one byte of an input table changes; refuses crafted manifests with
exit 2 and one line, writing nothing outside its temporary folder; passes on a run whose cohort
is reached through symbolic links."""

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recurstudy import audit as audit_module
from recurstudy.audit import audit, compare_outputs
from recurstudy.provenance import build_manifest, sha256_file

RECURSTUDY = Path(sys.executable).with_name("recurstudy")
REPO = Path(__file__).resolve().parents[1]


def _audit(manifest: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(RECURSTUDY), "audit", str(manifest), "--cores", "2", *extra],
        capture_output=True,
        text=True,
        timeout=1500,
    )


def _copy_run(demo_report: Path, dest: Path) -> Path:
    """A private copy of the shared run folder (links kept as links; test_browser's screenshot,
    which is no output of the workflow, left behind)."""
    shutil.copytree(
        demo_report,
        dest,
        symlinks=True,
        ignore=shutil.ignore_patterns(".snakemake", "screenshot.png"),
    )
    return dest


def _tamper(run: Path) -> None:
    """One byte of estimates.csv, a verdict of the report rewritten, claims.csv deleted, a stray
    file under results/."""
    target = run / "results/estimates.csv"
    data = bytearray(target.read_bytes())
    i = data.index(b"\n") + 5
    data[i] = ord("7") if data[i] != ord("7") else ord("8")
    target.write_bytes(bytes(data))
    html = (run / "reports/report.html").read_text(encoding="utf-8")
    assert "supported" in html  # the demo's primary claim
    (run / "reports/report.html").write_text(html.replace("supported", "contradicted", 1))
    (run / "results/claims.csv").unlink()
    (run / "results/stray.csv").write_text("not made by the workflow\n")


TAMPERED = {
    "run folder: differs: results/estimates.csv",
    "run folder: differs: reports/report.html",
    "run folder: missing: results/claims.csv",
    "run folder: extra: results/stray.csv",
}


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


def test_audit_passes_on_untouched_run(demo_report, tmp_path):
    run = _copy_run(demo_report, tmp_path / "run")
    proc = _audit(run / "reports/manifest.json")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "audit OK" in proc.stdout and "in a re-run" in proc.stdout
    assert "run folder:" not in proc.stdout and "re-run:" not in proc.stdout


def test_no_rerun_passes_on_untouched_run(demo_report, tmp_path):
    run = _copy_run(demo_report, tmp_path / "run")
    proc = _audit(run / "reports/manifest.json", "--no-rerun")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = json.loads((run / "reports/manifest.json").read_text())
    n_out, n_in = len(m["outputs"]), len(m["inputs"])
    assert proc.stdout.strip().splitlines() == [
        f"audit OK (no re-run): {n_out} outputs in the run folder and {n_in} inputs match the "
        "manifest byte for byte"
    ]


def test_no_rerun_names_every_tampered_output(demo_report, tmp_path):
    run = _copy_run(demo_report, tmp_path / "run")
    _tamper(run)
    proc = _audit(run / "reports/manifest.json", "--no-rerun")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert set(lines[:-1]) == TAMPERED  # every file named, nothing else
    assert lines[-1] == "audit FAILED: 4 file(s) in the run folder differ from the manifest"
    assert "Traceback" not in proc.stderr


def test_rerun_audit_also_names_the_run_folder(demo_report, tmp_path, monkeypatch):
    """The bug of issue 12: a faithful re-run made the audit pass whatever the run folder held.
    The re-run is stubbed (the one real re-run is test_audit_passes_on_untouched_run)."""
    run = _copy_run(demo_report, tmp_path / "run")
    _tamper(run)
    calls = []

    def faithful(manifest, run_dir, snakefile, cores, tmp, out):
        calls.append(run_dir)
        return []

    monkeypatch.setattr(audit_module, "_rerun", faithful)
    out = io.StringIO()
    assert audit(run / "reports/manifest.json", out=out) == 1
    lines = out.getvalue().strip().splitlines()
    assert calls == [run]
    assert TAMPERED <= set(lines) and "audit OK" not in out.getvalue()
    assert lines[-1] == "audit FAILED: 4 file(s) in the run folder differ from the manifest"

    # a re-run that differs too: both named, apart
    monkeypatch.setattr(audit_module, "_rerun", lambda *a: ["differs: results/rates.csv"])
    out = io.StringIO()
    assert audit(run / "reports/manifest.json", out=out) == 1
    lines = out.getvalue().strip().splitlines()
    assert "re-run: differs: results/rates.csv" in lines and TAMPERED <= set(lines)
    assert lines[-1] == (
        "audit FAILED: 4 file(s) in the run folder, 1 file(s) of the re-run differ from the "
        "manifest"
    )


def test_audit_fails_on_one_changed_byte(demo_report, tmp_path):
    run = _copy_run(demo_report, tmp_path / "run")
    target = run / "cohort/episodes.csv"
    data = bytearray(target.read_bytes())
    i = data.index(b"\n") + 10  # a byte inside the first data row
    data[i] = ord("7") if data[i] != ord("7") else ord("8")
    target.write_bytes(bytes(data))
    proc = _audit(run / "reports/manifest.json")  # stops before the re-run
    assert proc.returncode == 1
    assert "input changed: cohort/episodes.csv" in proc.stdout
    assert "participants.csv" not in proc.stdout
    assert "not re-run" in proc.stdout.splitlines()[-1]


def test_compare_outputs_names_the_file(demo_report, tmp_path):
    run = _copy_run(demo_report, tmp_path / "run")
    manifest = json.loads((run / "reports/manifest.json").read_text())
    assert compare_outputs(manifest, run) == []
    (run / "results/claims.csv").write_text("changed\n")
    (run / "reports/tables/rates.csv").unlink()
    assert compare_outputs(manifest, run) == [
        "missing: reports/tables/rates.csv",
        "differs: results/claims.csv",
    ]


def test_symlinked_cohort_passes(demo_report, tmp_path, monkeypatch):
    """A run folder whose cohort/ is a link to shared storage, and whose participants.csv is a
    link again: the manifest such a run writes records the paths as the config gives them (not
    the targets outside the run folder), and the audit passes."""
    run = _copy_run(demo_report, tmp_path / "run")
    shared = tmp_path / "shared" / "cohort"
    shared.parent.mkdir()
    shutil.move(run / "cohort", shared)
    store = tmp_path / "store"
    store.mkdir()
    shutil.move(shared / "participants.csv", store / "participants.csv")
    (shared / "participants.csv").symlink_to(store / "participants.csv")
    (run / "cohort").symlink_to(shared)
    assert (run / "cohort").is_symlink() and (run / "cohort/participants.csv").is_symlink()

    # what workflow/scripts/manifest.py writes in this folder (it runs with the run folder as
    # working directory and "." as run folder)
    original = json.loads((run / "reports/manifest.json").read_text())
    config = yaml.safe_load((run / "config.yaml").read_text())
    monkeypatch.chdir(run)
    rebuilt = build_manifest(Path("."), config, [str(run / "config.yaml")], REPO)
    assert rebuilt["inputs"] == original["inputs"]
    assert rebuilt["outputs"] == original["outputs"]

    proc = _audit(run / "reports/manifest.json", "--no-rerun")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("audit OK (no re-run)")


# Crafted manifests: refused before anything is copied or run. Each is a small run folder of its
# own (no workflow run needed): a manifest naming one real file of it with its true hash, so that
# an audit that failed to refuse the path would go on to copy it.


def _crafted_run(tmp_path: Path) -> tuple[Path, dict]:
    run = tmp_path / "outer" / "run"
    (run / "reports").mkdir(parents=True)
    (run / "config.yaml").write_text("data: {}\n")
    bait = tmp_path / "bait.csv"  # reached from the run folder as cohort/../../../bait.csv
    bait.write_text("id\n1\n")
    (run / "cohort").mkdir()
    lock = {"role": "lock", "root": "workflow", "path": "requirements.lock"}
    lock["sha256"] = sha256_file(REPO / "requirements.lock")
    manifest = {
        "inputs": [
            {"role": "config", "path": "config.yaml", "sha256": sha256_file(run / "config.yaml")},
            lock,
        ],
        "outputs": [],
    }
    return run, manifest


CRAFTED = {
    "traversal": (
        ("inputs", {"role": "data:x", "path": "cohort/../../../bait.csv"}),
        'inputs[2].path = "cohort/../../../bait.csv" is refused',
    ),
    "absolute": (("inputs", {"role": "data:x", "path": "ABSOLUTE"}), 'inputs[2].path = "/'),
    "root": (
        ("inputs", {"role": "data:x", "root": "/etc", "path": "bait.csv"}),
        'inputs[2].root = "/etc" is refused',
    ),
    "output_traversal": (
        ("outputs", {"path": "results/../../../bait.csv"}),
        'outputs[0].path = "results/../../../bait.csv" is refused',
    ),
    "not_json": (None, "is not JSON"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_manifest_is_refused(case, tmp_path, monkeypatch):
    run, manifest = _crafted_run(tmp_path)
    entry, message = CRAFTED[case]
    path = run / "reports/manifest.json"
    if entry is None:
        path.write_text("{'inputs': [")
    else:
        section, e = entry
        e = dict(e, sha256=sha256_file(tmp_path / "bait.csv"))
        if e["path"] == "ABSOLUTE":
            e["path"] = str(tmp_path / "bait.csv")
        manifest[section].append(e)
        path.write_text(json.dumps(manifest))
    audit_tmp = tmp_path / "audit_tmp"  # the audit's temporary folders go here
    audit_tmp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(audit_tmp))

    def no_rerun(*args, **kwargs):
        raise AssertionError("the crafted manifest reached the re-run")

    monkeypatch.setattr(audit_module.subprocess, "run", no_rerun)
    out, err = io.StringIO(), io.StringIO()
    assert audit(path, out=out, err=err) == 2
    assert out.getvalue() == ""
    assert err.getvalue().count("\n") == 1 and message in err.getvalue()
    assert err.getvalue().startswith("recurstudy audit: manifest refused: ")
    # nothing was written: not where the traversal leads (audit_tmp/bait.csv), not at all
    assert not (audit_tmp / "bait.csv").exists() and list(audit_tmp.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit_tmp", "bait.csv", "outer"]


@pytest.mark.parametrize(
    "text, named",
    [
        ("not json", "manifest.json is not JSON (Expecting value at line 1, column 1)"),
        ('{"inputs": [{"path": "x", "root": "/etc"}]}', 'inputs[0].root = "/etc" is refused'),
        ('{"inputs": [], "outputs": [{"path": "/x"}]}', 'outputs[0].path = "/x" is refused'),
    ],
)
def test_crafted_manifest_cli_one_line(text, named, tmp_path):
    """Through the command: exit 2, one line on stderr naming what is refused, no traceback."""
    manifest = tmp_path / "run/reports/manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(text)
    proc = _audit(manifest)
    assert proc.returncode == 2
    assert proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("recurstudy audit: manifest refused: ")
    assert named in proc.stderr


def test_manifest_paths_are_checked_strictly():
    """The path rule itself: relative, normalised, '..' only leading and only for run inputs."""
    check = audit_module._check_path
    for ok in ("cohort/x.csv", "../shared/x.csv", "../../x.csv"):
        check("k", ok, leading_up=True)
    for bad in (
        "a/../../../x",
        "/etc/passwd",
        "./x",
        "a//b",
        "a/",
        "..",
        "",
        "a/\x00b",
        "cohort/./x",
    ):
        with pytest.raises(audit_module.ManifestError, match="^k"):
            check("k", bad, leading_up=True)
    with pytest.raises(audit_module.ManifestError, match="leaves the folder"):
        check("k", "../x", leading_up=False)
    with pytest.raises(audit_module.ManifestError, match="under results/ or reports/"):
        check("k", "logs/x.log", leading_up=False, under=("results", "reports"))


def test_relpath_keeps_links_as_given(tmp_path, monkeypatch):
    """Provenance paths: a table reached through a link in the run folder is recorded where the
    config names it; an absolute config path through a linked folder is recorded inside the run
    folder; a table genuinely beside the run folder keeps its '..'."""
    from recurstudy.provenance import _relpath

    real = tmp_path / "real"
    run = real / "run"
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "p.csv").write_text("id\n")
    run.mkdir(parents=True)
    (run / "cohort").symlink_to(tmp_path / "shared")
    (run / "config.yaml").write_text("data: {}\n")
    (real / "beside.csv").write_text("id\n")
    (tmp_path / "link").symlink_to(real)
    monkeypatch.chdir(run)  # as workflow/scripts/manifest.py runs
    assert _relpath(Path(".") / "cohort/p.csv", ".") == "cohort/p.csv"
    assert _relpath(tmp_path / "link/run/config.yaml", ".") == "config.yaml"
    assert _relpath(Path(".") / "../beside.csv", ".") == "../beside.csv"


def test_templated_config_is_refused_before_the_rerun(tmp_path, monkeypatch):
    """A folder someone sent, whose config (hashed in its own manifest) is a yte template:
    Snakemake would run the template's Python when loading the --configfile, so the audit
    refuses it (exit 2, one line naming __use_yte__) and never starts the re-run."""
    run, manifest = _crafted_run(tmp_path)
    sentinel = tmp_path / "pwned"
    (run / "config.yaml").write_text(
        "__use_yte__: true\n"
        f'?if __import__("pathlib").Path("{sentinel}").write_text("x"):\n'
        "  data: {}\n"
    )
    manifest["inputs"][0]["sha256"] = sha256_file(run / "config.yaml")
    path = run / "reports/manifest.json"
    path.write_text(json.dumps(manifest))

    real_run = subprocess.run

    def no_snakemake(cmd, *args, **kwargs):
        if Path(str(cmd[0])).name == "snakemake":
            raise AssertionError("the templated config reached Snakemake")
        return real_run(cmd, *args, **kwargs)  # git, for the source commit

    monkeypatch.setattr(audit_module.subprocess, "run", no_snakemake)
    out, err = io.StringIO(), io.StringIO()
    assert audit(path, out=out, err=err) == 2
    assert err.getvalue().count("\n") == 1 and "__use_yte__" in err.getvalue(), err.getvalue()
    assert not sentinel.exists()
