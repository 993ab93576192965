"""Provenance: what a run was made from and what it made, as hashes.

Used by the report (its provenance section and methods paragraph), by
``workflow/scripts/manifest.py`` (``reports/manifest.json``) and by ``recurstudy audit``, which
re-runs a study and compares every output with the manifest. Everything here is deterministic:
sorted paths relative to the run directory, no times, no host names.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

# Packages whose versions the methods paragraph, the provenance section and the manifest list.
PACKAGES = (
    "recurstudy",
    "numpy",
    "scipy",
    "pandas",
    "pyarrow",
    "statsmodels",
    "lifelines",
    "formulaic",
    "pandera",
    "matplotlib",
    "snakemake",
    "nbconvert",
    "nbclient",
    "nbformat",
    "ipykernel",
)

# Outputs the manifest leaves out: itself, the run-info file (wall time, host), the PDF (printed
# by whatever Chromium the machine has, if any: see recurstudy.report.pdf), Snakemake's
# bookkeeping and the benchmark timings.
MANIFEST = "reports/manifest.json"
RUN_INFO = "reports/run_info.json"
REPORT_PDF = "reports/report.pdf"
OUTPUT_ROOTS = ("results", "reports")
EXCLUDED_OUTPUTS = (MANIFEST, RUN_INFO, REPORT_PDF)
EXCLUDED_PREFIXES = ("results/benchmarks/", ".snakemake/")
EXCLUDED_NAMES = (".snakemake_timestamp", ".gitkeep")


def sha256_file(path: str | Path) -> str:
    """The SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_versions(packages: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Python's and the listed packages' versions (``not installed`` when absent)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(path: str | Path) -> str:
    """The commit checked out at `path` (``git rev-parse HEAD``), or ``unknown``."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    out = proc.stdout.strip()
    return out if proc.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", out) else "unknown"


def input_hashes(config: Mapping[str, Any], run_dir: str | Path = ".") -> pd.DataFrame:
    """Name, path (as in the config), size and SHA-256 of each cohort table."""
    rows = []
    for name, path in sorted((config.get("data") or {}).items()):
        if not path:
            continue
        p = Path(run_dir) / path
        rows.append(
            {"table": name, "path": str(path), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
        )
    return pd.DataFrame(rows, columns=["table", "path", "bytes", "sha256"])


def output_files(run_dir: str | Path) -> list[str]:
    """Every output under results/ and reports/ of `run_dir` that the manifest covers, as
    sorted POSIX paths relative to `run_dir`."""
    run_dir = Path(run_dir)
    out = []
    for root in OUTPUT_ROOTS:
        base = run_dir / root
        if not base.is_dir():
            continue
        for p in base.rglob("*"):
            if not p.is_file():
                continue
            rel = p.relative_to(run_dir).as_posix()
            if rel in EXCLUDED_OUTPUTS or p.name in EXCLUDED_NAMES:
                continue
            if any(rel.startswith(x) for x in EXCLUDED_PREFIXES):
                continue
            out.append(rel)
    return sorted(out)


def file_entry(path: str, base: str | Path) -> dict[str, Any]:
    """A manifest entry: `path` (relative to `base`), its size and SHA-256."""
    p = Path(base) / path
    return {"path": path, "bytes": p.stat().st_size, "sha256": sha256_file(p)}


def _relpath(path: str | Path, start: str | Path) -> str:
    """`path` relative to `start`, as given: symbolic links are not followed, so that a table
    reached through a link inside the run folder (``cohort/`` a link to shared storage) is
    recorded where the config names it, and an audit finds it there. Only when the path as given
    lies outside `start` is the resolved form tried (an absolute config path through a linked
    ``/tmp``), and taken if that one lies inside."""
    given = os.path.relpath(os.path.abspath(path), os.path.abspath(start))
    if given.split(os.sep)[0] != os.pardir:
        return Path(given).as_posix()
    resolved = os.path.relpath(Path(path).resolve(), Path(start).resolve())
    return Path(resolved if resolved.split(os.sep)[0] != os.pardir else given).as_posix()


def writable_problem(folder: str | Path) -> str | None:
    """None when a file can be created in `folder`, else one line naming the folder and saying
    it is not writable (why, in the system's words). It tries to create a file rather than ask
    ``os.access``, which says yes to root even on a read-only or immutable folder."""
    folder = Path(folder).absolute()
    try:
        fd, name = tempfile.mkstemp(prefix=".recurstudy-write-check-", dir=folder)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return (
            f"the run folder {folder} is not writable ({reason}): every output goes under it; "
            "make it writable or run on a copy"
        )
    os.close(fd)
    os.unlink(name)
    return None


def build_manifest(
    run_dir: str | Path,
    config: Mapping[str, Any],
    config_files: Sequence[str],
    workflow_dir: str | Path,
) -> dict[str, Any]:
    """The manifest: inputs (cohort tables, config file(s), the lock file), outputs, versions and
    the source commit; all paths relative to the run directory (the lock file's to the workflow
    source), sorted; nothing that varies between runs."""
    run_dir = Path(run_dir)
    inputs = []
    for name, path in sorted((config.get("data") or {}).items()):
        if path:
            entry = file_entry(_relpath(run_dir / path, run_dir), run_dir)
            inputs.append({"role": f"data:{name}", **entry})
    for cf in config_files:
        entry = file_entry(_relpath(run_dir / cf, run_dir), run_dir)
        inputs.append({"role": "config", **entry})
    lock = Path(workflow_dir) / "requirements.lock"
    if lock.exists():
        inputs.append(
            {"role": "lock", "root": "workflow", **file_entry("requirements.lock", workflow_dir)}
        )
    from recurstudy.plan import PlanError, plan_path

    try:
        plan_file = plan_path(config, run_dir)
    except PlanError:
        plan_file = None
    if plan_file is not None and plan_file.exists():
        inputs.append({"role": "plan", **file_entry(_relpath(plan_file, run_dir), run_dir)})
    inputs.sort(key=lambda e: (e.get("root", "run"), e["path"]))
    outputs = [file_entry(p, run_dir) for p in output_files(run_dir)]
    status_file = run_dir / "results" / "plan_status.json"
    plan = json.loads(status_file.read_text()) if status_file.exists() else None
    return {
        "manifest_version": 1,
        "source_commit": git_commit(workflow_dir),
        "versions": package_versions(),
        "plan": {
            "prespecified": bool(plan and plan.get("prespecified")),
            "locked_on": plan.get("locked_on") if plan else None,
            "statement": plan.get("statement") if plan else "not pre-specified",
        },
        "inputs": inputs,
        "outputs": outputs,
    }


def dumps_json(obj: Any) -> str:
    """Deterministic JSON text (sorted keys, two-space indent, trailing newline)."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
