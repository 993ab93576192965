"""Snakemake entry point: reports/manifest.json (hashes of inputs and outputs, versions, commit)
and reports/run_info.json (what varies between runs: wall time, host; not in the manifest)."""

import json
import os
import platform
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

from recurstudy.provenance import build_manifest, dumps_json
from recurstudy.settings import load_settings

snakemake = globals()["snakemake"]
run_dir = Path(".")
settings = load_settings(snakemake.params.settings, "report")
configfiles = list(snakemake.params.configfiles)
manifest = build_manifest(run_dir, settings, configfiles, snakemake.params.workflow_dir)
Path(snakemake.output.manifest).write_text(dumps_json(manifest), encoding="utf-8")

# Approximate wall time: from the oldest output of this run to now.
mtimes = [os.path.getmtime(e["path"]) for e in manifest["outputs"]]
now = time.time()
bench = 0.0
for tsv in sorted(Path("results/benchmarks").rglob("*.tsv")):
    lines = tsv.read_text().splitlines()
    if len(lines) > 1:
        try:
            bench += float(lines[1].split("\t")[0])
        except ValueError:
            pass
info = {
    "host": socket.gethostname(),
    "platform": platform.platform(),
    "cpu_count": os.cpu_count(),
    "run_directory": str(Path.cwd()),
    "finished_at_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    "wall_seconds_since_first_output": round(now - min(mtimes), 1) if mtimes else None,
    "benchmarked_job_seconds": round(bench, 1),
}
Path(snakemake.output.run_info).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
