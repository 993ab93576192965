"""`recurstudy audit reports/manifest.json`: check a run folder against its manifest, then re-run
the workflow from the manifest's inputs in a temporary directory and check the re-run too.

0. The manifest is read and checked strictly before anything is touched: JSON with ``inputs``
   and ``outputs`` lists of entries with a ``path`` and a 64-hex ``sha256``; every path relative
   and normalised (no ``.`` part, no ``..`` part except leading ones of an input of the run
   folder, placed by `_layout`; no output outside ``results/`` and ``reports/``); ``root`` absent,
   ``run`` or ``workflow``. Anything else is refused with one line naming the key and its value,
   exit 2 (`ManifestError`).
1. Each input (cohort tables, config file, plan lock, the workflow's lock file) is hashed where
   it is now; one line per changed or missing input.
2. The run folder's own outputs: each output the manifest lists is hashed in the run folder; one
   line per file that differs or is missing, and per file under ``results/`` or ``reports/``
   that the manifest does not list (the files the manifest always leaves out excepted:
   `recurstudy.provenance.output_files`).
3. Unless ``--no-rerun`` (or an input differs: the outputs of other inputs prove nothing), the
   inputs are copied into a temporary directory with the same layout relative to the run folder
   and Snakemake re-runs the whole workflow there; one line per output of the re-run that
   differs from the manifest, is missing or is extra.

Exit 0 and one ``audit OK`` line when nothing differs; 1 when anything does (every file named,
run folder and re-run apart); 2 when the manifest itself is unusable.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

from recurstudy.provenance import OUTPUT_ROOTS, git_commit, output_files, sha256_file

WORKFLOW_DIR = Path(__file__).resolve().parents[2]
ROOTS = ("run", "workflow")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """A manifest the audit refuses: unreadable, not JSON, or an entry that is malformed or
    points outside the run folder (the message names the key and its value)."""


def _check_path(key: str, value: Any, *, leading_up: bool, under: tuple[str, ...] = ()) -> None:
    """Refuse `value` (found at `key`) unless it is a relative, normalised POSIX path without
    ``..`` (``leading_up``: except leading ones) and, with `under`, inside one of those folders."""
    shown = json.dumps(value, ensure_ascii=False)
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{key} must be a non-empty path, not {shown}")
    if "\x00" in value or "\\" in value:
        raise ManifestError(f"{key} = {shown} is refused: NUL or backslash in a path")
    if value.startswith("/"):
        raise ManifestError(f"{key} = {shown} is refused: absolute path (paths are relative)")
    parts = PurePosixPath(value).parts
    lead = 0
    while lead < len(parts) and parts[lead] == "..":
        lead += 1
    if posixpath.normpath(value) != value or "." in parts or ".." in parts[lead:]:
        raise ManifestError(
            f"{key} = {shown} is refused: not a normalised path "
            "(no '.', '..', '//' or trailing '/' inside it)"
        )
    if lead and not leading_up:
        raise ManifestError(f"{key} = {shown} is refused: '..' leaves the folder")
    if lead == len(parts):
        raise ManifestError(f"{key} = {shown} is refused: names a folder, not a file")
    if under and parts[0] not in under:
        raise ManifestError(
            f"{key} = {shown} is refused: outputs lie under {' or '.join(u + '/' for u in under)}"
        )


def _check_entries(manifest: dict[str, Any], section: str) -> None:
    entries = manifest.get(section)
    if not isinstance(entries, list):
        shown = json.dumps(entries, ensure_ascii=False)[:80]
        raise ManifestError(f"{section} must be a list of entries, not {shown}")
    for i, entry in enumerate(entries):
        key = f"{section}[{i}]"
        if not isinstance(entry, dict):
            raise ManifestError(f"{key} must be an object with path and sha256")
        root = entry.get("root", "run")
        if section == "outputs" and "root" in entry:
            raise ManifestError(f"{key}.root = {json.dumps(root)} is refused: outputs have none")
        if root not in ROOTS:
            raise ManifestError(
                f"{key}.root = {json.dumps(root, ensure_ascii=False)} is refused: "
                'allowed are "run" (the default) and "workflow"'
            )
        _check_path(
            f"{key}.path",
            entry.get("path"),
            leading_up=section == "inputs" and root == "run",
            under=OUTPUT_ROOTS if section == "outputs" else (),
        )
        digest = entry.get("sha256")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            shown = json.dumps(digest, ensure_ascii=False)[:80]
            raise ManifestError(f"{key}.sha256 = {shown} is refused: not a SHA-256 hex digest")
        if section == "inputs" and not isinstance(entry.get("role", ""), str):
            raise ManifestError(f"{key}.role must be a string")


def load_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest at `path`, checked (module docstring, step 0); `ManifestError` otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ManifestError(f"cannot read {path}: {reason}") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(
            f"{path} is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path} must hold a JSON object, not {type(manifest).__name__}")
    _check_entries(manifest, "inputs")
    _check_entries(manifest, "outputs")
    return manifest


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path`, every link followed, lies inside `folder` (also resolved)."""
    return path.resolve().is_relative_to(folder.resolve())


def _input_location(entry: dict[str, Any], run_dir: Path, workflow_dir: Path) -> Path:
    base = workflow_dir if entry.get("root") == "workflow" else run_dir
    return base / entry["path"]


def _label(entry: dict[str, Any]) -> str:
    return entry["path"] + (" (workflow)" if entry.get("root") == "workflow" else "")


def _hash(path: Path) -> str | None:
    """The file's SHA-256, or None when it is not a readable file."""
    try:
        return sha256_file(path) if path.is_file() else None
    except OSError:
        return None


def check_inputs(manifest: dict[str, Any], run_dir: Path, workflow_dir: Path) -> list[str]:
    """One problem line per input whose bytes differ from the manifest (or that is missing)."""
    problems = []
    for entry in manifest["inputs"]:
        digest = _hash(_input_location(entry, run_dir, workflow_dir))
        if digest is None:
            problems.append(f"input missing: {_label(entry)}")
        elif digest != entry["sha256"]:
            problems.append(
                f"input changed: {_label(entry)} "
                f"(sha256 {digest[:12]}…, manifest {entry['sha256'][:12]}…)"
            )
    return problems


def compare_outputs(manifest: dict[str, Any], rerun_dir: Path) -> list[str]:
    """One line per output of `rerun_dir` (a run folder or a re-run) that differs from the
    manifest, is missing, or is under results/ or reports/ without being listed."""
    expected = {e["path"]: e["sha256"] for e in manifest["outputs"]}
    found = {p: _hash(rerun_dir / p) for p in output_files(rerun_dir)}
    for path in expected:
        if path not in found:
            found[path] = _hash(rerun_dir / path)
    lines = []
    for path in sorted(set(expected) | set(found)):
        if found.get(path) is None:
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
            for part in PurePosixPath(entry["path"]).parts:
                if part != "..":
                    break
                lead += 1
            depth = max(depth, lead)
    run = tmp
    for i in range(depth):
        run = run / f"up{i}"
    return run / "run"


def _copy_inputs(manifest: dict[str, Any], run_dir: Path, tmp: Path) -> tuple[Path, Path | None]:
    """Copy the run folder's inputs into the re-run layout under `tmp` (links followed: the copy
    holds the bytes); return the re-run folder and the copied config file."""
    rerun = _layout(manifest, tmp)
    rerun.mkdir(parents=True)
    config = None
    for i, entry in enumerate(manifest["inputs"]):
        if entry.get("root") == "workflow":
            continue
        dest = rerun / entry["path"]
        if not _inside(dest, tmp):  # cannot happen after load_manifest; checked all the same
            shown = json.dumps(entry["path"], ensure_ascii=False)
            raise ManifestError(f"inputs[{i}].path = {shown} leaves the re-run folder")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run_dir / entry["path"], dest)
        except OSError as exc:
            shown = json.dumps(entry["path"], ensure_ascii=False)
            raise ManifestError(
                f"inputs[{i}].path = {shown}: cannot copy it for the re-run ({exc.strerror or exc})"
            ) from None
        if entry.get("role") == "config":
            config = dest
    return rerun, config


def _rerun(
    manifest: dict[str, Any],
    run_dir: Path,
    snakefile: Path,
    cores: int,
    tmp: Path,
    out: TextIO,
) -> list[str] | None:
    """Re-run the workflow in `tmp` from copies of the inputs; the lines of `compare_outputs`,
    or None when the re-run failed (its error printed)."""
    rerun, config = _copy_inputs(manifest, run_dir, tmp)
    if config is not None:
        # Snakemake renders a yte template (__use_yte__) in a --configfile before any of our
        # code runs: a folder someone sent must not run code through the audit.
        from recurstudy.config import ConfigError, refuse_templating

        try:
            refuse_templating(config)
        except ConfigError as exc:
            raise ManifestError(f"the run's config file is refused: {exc}") from None
    cmd = [str(Path(sys.executable).with_name("snakemake")), "-s", str(snakefile)]
    cmd += ["--directory", str(rerun), "--cores", str(cores)]
    if config is not None:
        cmd += ["--configfile", str(config)]
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    except OSError as exc:
        print(f"the re-run could not start: {exc}", file=out)
        return None
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=out)
        print(f"the re-run stopped with exit code {proc.returncode}", file=out)
        return None
    return compare_outputs(manifest, rerun)


def audit(
    manifest_path: str | Path,
    *,
    run_dir: str | Path | None = None,
    cores: int = 2,
    snakefile: str | Path | None = None,
    keep: bool = False,
    rerun: bool = True,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Run the audit; print its findings to `out` (a refused manifest to `err`); return the exit
    code: 0 OK, 1 differences (or a failed re-run), 2 the manifest is unusable."""
    manifest_path = Path(manifest_path)
    try:
        manifest = load_manifest(manifest_path)
    except ManifestError as exc:
        print(f"recurstudy audit: manifest refused: {exc}", file=err)
        return 2
    # The manifest lives at reports/manifest.json of its run directory.
    run_dir = Path(run_dir) if run_dir is not None else manifest_path.absolute().parent.parent
    if not run_dir.is_dir():
        print(f"recurstudy audit: run folder {run_dir} is not a folder", file=err)
        return 2
    for i, entry in enumerate(manifest["inputs"]):
        up = PurePosixPath(entry["path"]).parts.count("..")
        if entry.get("root") != "workflow" and up >= len(run_dir.absolute().parts):
            shown = json.dumps(entry["path"], ensure_ascii=False)
            print(
                f"recurstudy audit: manifest refused: inputs[{i}].path = {shown} climbs above "
                f"the filesystem root from {run_dir.absolute()}",
                file=err,
            )
            return 2
    snakefile = Path(snakefile) if snakefile else WORKFLOW_DIR / "Snakefile"
    workflow_dir = snakefile.resolve().parent

    inputs = check_inputs(manifest, run_dir, workflow_dir)
    own = [f"run folder: {line}" for line in compare_outputs(manifest, run_dir)]
    for line in inputs + own:
        print(line, file=out)
    n_out, n_in = len(manifest["outputs"]), len(manifest["inputs"])
    commit = git_commit(workflow_dir)
    if rerun and not inputs and commit != manifest.get("source_commit"):
        print(
            f"note: source commit {commit} differs from the manifest's "
            f"{manifest.get('source_commit')}",
            file=out,
        )

    again: list[str] = []
    if rerun and not inputs:
        tmp = Path(tempfile.mkdtemp(prefix="recurstudy-audit-"))
        try:
            lines = _rerun(manifest, run_dir, snakefile, cores, tmp, out)
        except ManifestError as exc:
            print(f"recurstudy audit: manifest refused: {exc}", file=err)
            return 2
        finally:
            if keep:
                print(f"re-run kept in {tmp}", file=out)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
        if lines is None:
            print("audit FAILED: the re-run did not finish", file=out)
            return 1
        again = [f"re-run: {line}" for line in lines]
        for line in again:
            print(line, file=out)

    if inputs or own or again:
        parts = [f"{len(inputs)} input(s)"] if inputs else []
        parts += [f"{len(own)} file(s) in the run folder"] if own else []
        parts += [f"{len(again)} file(s) of the re-run"] if again else []
        tail = ""
        if inputs and rerun:
            tail = "; not re-run (the outputs of other inputs prove nothing)"
        print(f"audit FAILED: {', '.join(parts)} differ from the manifest{tail}", file=out)
        return 1
    if rerun:
        print(
            f"audit OK: {n_out} outputs in the run folder and in a re-run from {n_in} inputs "
            f"match the manifest byte for byte (commit {commit[:12]})",
            file=out,
        )
    else:
        print(
            f"audit OK (no re-run): {n_out} outputs in the run folder and {n_in} inputs "
            "match the manifest byte for byte",
            file=out,
        )
    return 0
