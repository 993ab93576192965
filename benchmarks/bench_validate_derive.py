"""Benchmark: the validate and derive jobs in-process, piece by piece, on a run folder's cohort.

Does what workflow/scripts/validate.py and derive.py do (validate_cohort, the reports, the clean
Parquet tables; read them back, derive_all, write the datasets) and prints each piece's wall
seconds per repeat, the median, the CPU seconds of each job (Arrow's threads included), and the
sha256 of every output, so that a change can be shown to leave the bytes alone.

Usage: .venv/bin/python benchmarks/bench_validate_derive.py CONFIG OUTDIR [--repeats 3]
       [--base DIR]   (DIR: the folder the config's data paths are relative to; default the
       config's folder, as in a run folder; the demo: --base . with config/config.yaml)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

from recurstudy.config import load_config
from recurstudy.derive import derive_all, write_parquet
from recurstudy.settings import load_settings, stage_settings
from recurstudy.validate import (
    outcome_message,
    validate_cohort,
    write_clean_tables,
    write_validation_report,
)

PIECES = (
    "validate_cohort",
    "write_report",
    "write_clean",
    "validate_job",
    "validate_cpu",
    "read_parquet",
    "derive_all",
    "write_derived",
    "derive_job",
    "derive_cpu",
)


def run_once(config_path: Path, out: Path, base: Path) -> dict[str, float]:
    config = load_config(config_path)
    v_settings = load_settings(stage_settings(config, "validate"), "validate")
    d_settings = load_settings(stage_settings(config, "derive"), "derive")
    c0, t0 = time.process_time(), time.perf_counter()
    outcome = validate_cohort(v_settings, base)
    t1 = time.perf_counter()
    write_validation_report(outcome, out / "validation")
    (out / "message.txt").write_text(outcome_message(outcome, out / "validation"))
    t2 = time.perf_counter()
    if not outcome.ok:
        sys.exit(f"validation failed; see {out / 'validation' / 'report.md'}")
    write_clean_tables(outcome, out / "validated")
    flow = json.dumps(outcome.flow, indent=2, sort_keys=True) + "\n"
    (out / "validated" / "flow.json").write_text(flow)
    t3, c3 = time.perf_counter(), time.process_time()
    del outcome
    participants = pd.read_parquet(out / "validated" / "participants.parquet")
    episodes = pd.read_parquet(out / "validated" / "episodes.parquet")
    t4 = time.perf_counter()
    datasets = derive_all(participants, episodes, d_settings)
    t5 = time.perf_counter()
    for name, df in datasets.items():
        write_parquet(df, out / "analysis" / f"{name}.parquet")
    t6, c6 = time.perf_counter(), time.process_time()
    values = (t1 - t0, t2 - t1, t3 - t2, t3 - t0, c3 - c0, t4 - t3, t5 - t4, t6 - t5, t6 - t3)
    return dict(zip(PIECES, (*values, c6 - c3), strict=True))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--base", type=Path, default=None)
    args = parser.parse_args(argv)
    config_path, out = args.config.resolve(), args.outdir
    base = args.base if args.base is not None else config_path.parent
    runs = []
    for i in range(args.repeats):
        runs.append(run_once(config_path, out, base))
        print(f"run {i + 1}: " + " ".join(f"{k}={v:.2f}" for k, v in runs[-1].items()), flush=True)
    medians = {k: statistics.median(r[k] for r in runs) for k in PIECES}
    print("median: " + " ".join(f"{k}={v:.2f}" for k, v in medians.items()))
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        print(hashlib.sha256(path.read_bytes()).hexdigest(), path.relative_to(out))


if __name__ == "__main__":
    main(sys.argv[1:])
