"""Benchmark: `recurstudy simulate` (simulate and write the three CSVs and truth.json) at scale.

Each size runs the console command in a fresh process (the demo preset, about 3 episodes per
participant: `--rate-per-day 0.03`), and prints its wall time, CPU time (user + system: the figure
that does not depend on what else the machine runs) and peak resident memory, read from the
child's rusage (what `/usr/bin/time -v` reports as "Maximum resident set size").
Usage: python benchmarks/bench_simulate.py [n ...]   (default 10000 100000 1000000)
Target (issue 12): 1 million participants within 10 s and 2 GB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(n: int, out: Path) -> tuple[float, float, float]:
    """(wall s, cpu s, peak RSS GB) of one `recurstudy simulate` run in a child process."""
    cmd = [
        sys.executable,
        "-m",
        "recurstudy.cli",
        "simulate",
        "--preset",
        "demo",
        "--n",
        str(n),
        "--seed",
        "1",
        "--rate-per-day",
        "0.03",
        "--out",
        str(out),
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"recurstudy simulate failed for n = {n}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024**2


def main(sizes: list[int]) -> None:
    print(
        f"{'participants':>12} {'episodes':>10} {'per person':>10} {'deaths':>8} {'wall s':>8}"
        f" {'cpu s':>7} {'peak GB':>8}"
    )
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            wall, cpu, gb = run(n, Path(tmp))
            meta = json.loads((Path(tmp) / "truth.json").read_text())
        episodes = meta["counts"]["episodes"]
        deaths = meta["end_reasons"].get("death", 0)
        print(
            f"{n:>12} {episodes:>10} {episodes / n:>10.2f} {deaths:>8} {wall:>8.2f} {cpu:>7.2f}"
            f" {gb:>8.2f}"
        )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10_000, 100_000, 1_000_000])
