"""Benchmark recurstudy.models.survival.mean_cumulative_function on simulated recurrent episodes.

Prints, for one call on the counting-process rows of `--participants` participants (default 1M):
wall-clock and process CPU time, peak memory of the numpy/pandas allocations made during the call
(tracemalloc), the number of rows, events and distinct event days, the chunk size used for the
participant-clustered variance, and the MCF with its robust and naive standard errors at the end.

Data: follow-up 200-1499 days (integer days, so up to ~1500 distinct event times), episodes a
Poisson process per participant with a gamma frailty (variance 0.5), about 4 per participant on
average; back-to-back (start, stop] rows cut at the episode days, the last censored at the end
of follow-up (about 5 rows per participant).

Usage: ``python benchmarks/bench_mcf.py [--participants 1000000] [--chunk-size N]``
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc

import numpy as np
import pandas as pd

from recurstudy.models import survival
from recurstudy.models.survival import mean_cumulative_function


def simulate_cp(n_part: int, seed: int = 1) -> pd.DataFrame:
    """Counting-process rows (participant_id, start, stop, event), integer days."""
    rng = np.random.default_rng(seed)
    frail = rng.gamma(2.0, 0.5, n_part)
    follow = rng.integers(200, 1500, n_part)
    mu = frail * follow
    n_ev = rng.poisson(4.0 * mu / mu.mean())
    sub = np.repeat(np.arange(n_part), n_ev)
    t = 1 + np.floor(rng.random(sub.size) * (follow[sub] - 1)).astype(np.int64)
    key = np.unique(sub.astype(np.int64) * 10_000 + t)  # distinct episode days per participant
    ev_sub, ev_t = key // 10_000, key % 10_000
    all_sub = np.concatenate([ev_sub, np.arange(n_part)])
    all_t = np.concatenate([ev_t, follow])
    all_ev = np.concatenate([np.ones(ev_sub.size, np.int64), np.zeros(n_part, np.int64)])
    o = np.lexsort((all_t, all_sub))
    sub, stop, event = all_sub[o], all_t[o], all_ev[o]
    start = np.r_[0, stop[:-1]]
    start[np.r_[True, sub[1:] != sub[:-1]]] = 0
    return pd.DataFrame({"participant_id": sub, "start": start, "stop": stop, "event": event})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--participants", type=int, default=1_000_000)
    ap.add_argument("--chunk-size", type=int, default=None)
    args = ap.parse_args()
    cp = simulate_cp(args.participants)
    n_times = int(cp.loc[cp["event"] == 1, "stop"].nunique())
    chunk = args.chunk_size or min(20_000, max(1, survival.MCF_CHUNK_CELLS // (n_times + 1)))
    tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    mcf = mean_cumulative_function(cp, chunk_size=args.chunk_size)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    last = mcf.iloc[-1]
    print(
        f"participants {args.participants:,}  rows {len(cp):,}  events {int(cp['event'].sum()):,}  "
        f"event days {n_times:,}  chunk {chunk:,} participants"
    )
    print(
        f"mean_cumulative_function: wall {wall:.2f} s  cpu {cpu:.2f} s  peak {peak / 2**20:.0f} MB"
    )
    print(
        f"at day {last['time']:.0f}: MCF {last['mcf']:.4f}  robust SE {last['std_err']:.5f}  "
        f"naive SE {last['std_err_naive']:.5f}"
    )
    print(f"load average at end: {os.getloadavg()[0]:.2f} (wall time is inflated when > 2)")


if __name__ == "__main__":
    main()
