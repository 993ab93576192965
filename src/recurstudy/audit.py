"""`recurstudy audit reports/manifest.json`: re-run the workflow from the manifest's inputs in a
temporary directory and compare every output's SHA-256 with the manifest.

1. Each input listed in the manifest (cohort tables, config file, the lock file) is hashed where
   it is now; a changed or missing input is reported by name and the audit stops (exit 1): the
   outputs of other inputs prove nothing.
2. The inputs are copied into a temporary directory with the same layout relative to the run
   directory, and Snakemake re-runs the whole workflow there (``--directory`` that folder, the
   same config file).
3. Every output of the manifest is compared with its re-made twin: one line per differing,
   missing or extra file, exit 1 if there is any; otherwise one ``audit OK`` line, exit 0.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from recurstudy.provenance import git_commit, output_files, sha256_file

WORKFLOW_DIR = Path(__file__).resolve().parents[2]


def _input_location(entry: dict[str, Any], run_dir: Path, workflow_dir: Path) -> Path:
    base = workflow_dir if entry.get("root") == "workflow" else run_dir
    return base / entry["path"]


def check_inputs(manifest: dict[str, Any], run_dir: Path, workflow_dir: Path) -> list[str]:
    """One problem line per input whose bytes differ from the manifest (or that is missing)."""
    problems = []
    for entry in manifest["inputs"]:
        where = _input_location(entry, run_dir, workflow_dir)
        label = entry["path"] + (" (workflow)" if entry.get("root") == "workflow" else "")
        if not where.is_file():
            problems.append(f"input missing: {label}")
            continue
        digest = sha256_file(where)
        if digest != entry["sha256"]:
            problems.append(
                f"input changed: {label} (sha256 {digest[:12]}…, manifest {entry['sha256'][:12]}…)"
            )
    return problems


def compare_outputs(manifest: dict[str, Any], rerun_dir: Path) -> list[str]:
    """One line per output that differs, is missing from the re-run, or is new in it."""
    expected = {e["path"]: e["sha256"] for e in manifest["outputs"]}
    found = {p: sha256_file(rerun_dir / p) for p in output_files(rerun_dir)}
    lines = []
    for path in sorted(set(expected) | set(found)):
        if path not in found:
            lines.append(f"missing: {path}")
        elif path not in expected:
            lines.append(f"extra: {path}")
        elif found[path] != expected[path]:
            lines.append(f"differs: {path}")
    return lines


def _layout(manifest: dict[str, Any], tmp: Path) -> Path:
    """The re-run directory inside `tmp`, deep enough that inputs given as ../x still land
    inside `tmp` at the same relative place."""
    depth = 0
    for entry in manifest["inputs"]:
        if entry.get("root") != "workflow":
            lead = 0
            for part in Path(entry["path"]).parts:
                if part != "..":
                    break
                lead += 1
            depth = max(depth, lead)
    run = tmp
    for i in range(depth):
        run = run / f"up{i}"
    return run / "run"


def audit(
    manifest_path: str | Path,
    *,
    run_dir: str | Path | None = None,
    cores: int = 2,
    snakefile: str | Path | None = None,
    keep: bool = False,
    out=sys.stdout,
) -> int:
    """Run the audit; print its findings to `out`; return the exit code (0 OK, 1 differences)."""
    manifest_path = Path(manifest_path)
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    # The manifest lives at reports/manifest.json of its run directory.
    run_dir = Path(run_dir) if run_dir is not None else manifest_path.resolve().parent.parent
    snakefile = Path(snakefile) if snakefile else WORKFLOW_DIR / "Snakefile"
    workflow_dir = snakefile.resolve().parent

    problems = check_inputs(manifest, run_dir, workflow_dir)
    if problems:
        for line in problems:
            print(line, file=out)
        print(
            f"audit FAILED: {len(problems)} input(s) differ from the manifest; not re-run", file=out
        )
        return 1
    commit = git_commit(workflow_dir)
    if commit != manifest.get("source_commit"):
        print(
            f"note: source commit {commit} differs from the manifest's "
            f"{manifest.get('source_commit')}",
            file=out,
        )

    tmp = Path(tempfile.mkdtemp(prefix="recurstudy-audit-"))
    try:
        rerun = _layout(manifest, tmp)
        rerun.mkdir(parents=True)
        config = None
        for entry in manifest["inputs"]:
            if entry.get("root") == "workflow":
                continue
            dest = rerun / entry["path"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(run_dir / entry["path"], dest)
            if entry["role"] == "config":
                config = dest
        cmd = [
            str(Path(sys.executable).with_name("snakemake")),
            "-s",
            str(snakefile),
            "--directory",
            str(rerun),
            "--cores",
            str(cores),
        ]
        if config is not None:
            cmd[5:5] = ["--configfile", str(config)]
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=out)
            print(f"audit FAILED: the re-run stopped with exit code {proc.returncode}", file=out)
            return 1
        lines = compare_outputs(manifest, rerun)
        for line in lines:
            print(line, file=out)
        if lines:
            print(
                f"audit FAILED: {len(lines)} of {len(manifest['outputs'])} outputs differ", file=out
            )
            return 1
        print(
            f"audit OK: {len(manifest['outputs'])} outputs reproduced byte for byte from "
            f"{len(manifest['inputs'])} inputs (commit {commit[:12]})",
            file=out,
        )
        return 0
    finally:
        if keep:
            print(f"re-run kept in {tmp}", file=out)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
