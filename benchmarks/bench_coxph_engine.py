"""Benchmark recurstudy.models.coxph_engine on simulated Andersen-Gill data.

Prints fit time (best of --repeat; wall clock and process CPU time) and peak memory (tracemalloc:
numpy allocations made during the fit) for 10k, 100k and 1M intervals with 2 covariates and a
cluster-robust variance (5 intervals per cluster on average, integer day times, many ties).

Usage: ``python benchmarks/bench_coxph_engine.py [--sizes 10000 100000 1000000] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc

import numpy as np

from recurstudy.models.coxph_engine import coxph_fit


def simulate_ag(n_intervals: int, seed: int = 1, beta=(-0.4, 0.3)) -> dict[str, np.ndarray]:
    """Andersen-Gill data: Poisson process per subject (gamma frailty, variance 0.5), integer days.

    Subjects have about 5 intervals each on average: back-to-back (start, stop] intervals cut at
    the event days, the last one censored at the end of follow-up.  Two events on the same day
    of one subject are merged, which slightly attenuates the estimates at 1M rows (a timing
    benchmark, not a test of unbiasedness; tests/test_coxph_engine.py has that one).
    """
    rng = np.random.default_rng(seed)
    n_sub = max(n_intervals // 5, 1)
    arm = rng.integers(0, 2, n_sub).astype(float)
    x = rng.normal(size=n_sub)
    frail = rng.gamma(2.0, 0.5, n_sub)
    follow = rng.integers(200, 1500, n_sub)
    lin = beta[0] * arm + beta[1] * x
    mu = frail * np.exp(lin) * follow
    n_ev = rng.poisson(4.0 * mu / mu.mean())
    sub = np.repeat(np.arange(n_sub), n_ev)
    t = 1 + np.floor(rng.random(sub.size) * (follow[sub] - 1)).astype(np.int64)
    # distinct event days within subject, sorted by (subject, day)
    key = np.unique(sub.astype(np.int64) * 10_000 + t)
    ev_sub, ev_t = key // 10_000, key % 10_000
    # add the censored end of follow-up for everyone
    all_sub = np.concatenate([ev_sub, np.arange(n_sub)])
    all_t = np.concatenate([ev_t, follow])
    all_ev = np.concatenate([np.ones(ev_sub.size, int), np.zeros(n_sub, int)])
    o = np.lexsort((all_t, all_sub))
    sub, stop, event = all_sub[o], all_t[o], all_ev[o]
    start = np.r_[0, stop[:-1]]
    start[np.r_[True, sub[1:] != sub[:-1]]] = 0
    X = np.column_stack([arm[sub], x[sub]])
    return {"X": X, "start": start, "stop": stop, "event": event, "id": sub}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(
        f"{'intervals':>10} {'clusters':>9} {'events':>8} {'wall s':>7} {'cpu s':>7} "
        f"{'peak MB':>8}  coef / robust se"
    )
    for n in args.sizes:
        d = simulate_ag(n)
        walls, cpus = [], []
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            fit = coxph_fit(d["X"], d["stop"], d["event"], start=d["start"], cluster=d["id"])
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        tracemalloc.start()
        coxph_fit(d["X"], d["stop"], d["event"], start=d["start"], cluster=d["id"])
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(
            f"{d['stop'].size:>10} {fit.n_clusters:>9} {fit.n_events:>8} {min(walls):>7.3f} "
            f"{min(cpus):>7.3f} {peak / 2**20:>8.1f}  {np.round(fit.coef, 4)} "
            f"{np.round(fit.robust_se, 4)} iter {fit.iterations}"
        )
    print(f"load average at end: {os.getloadavg()[0]:.2f} (wall time is inflated when > 2)")


if __name__ == "__main__":
    main()
