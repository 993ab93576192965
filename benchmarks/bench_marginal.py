"""Benchmark the marginal_mean model (recurstudy.models.marginal) on simulated recurrent episodes.

Prints, for `--participants` participants (default 100k, half per arm): rows, events and distinct
event days; wall-clock and CPU time and peak traced memory (tracemalloc) of one whole
``marginal_mean`` fit through ``fit_spec`` (both arms' means and influence terms at tau, ratio,
difference and the pseudo-score test), of its parts, of the Andersen-Gill fitted mean function
given the coefficient, and for scale of ``mean_cumulative_function`` (whole curve with its
clustered variance) on both arms; then the estimates.

Data: follow-up 120-182 days (integer days), episodes a Poisson process per participant with a
gamma frailty (variance 0.5), control rate 0.02 per day, rate ratio 0.32 (the demo's design);
back-to-back (start, stop] rows cut at the episode days, the last censored at the end of
follow-up.

Usage: ``python benchmarks/bench_marginal.py [--participants 100000] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc

import numpy as np
import pandas as pd

from recurstudy.models import ModelSpec, fit_spec
from recurstudy.models.marginal import mean_at, proportional_rates_mean, pseudo_score_test
from recurstudy.models.survival import mean_cumulative_function


def simulate_cp(n_part: int, seed: int = 1) -> pd.DataFrame:
    """Counting-process rows (participant_id, arm, start, stop, event), integer days."""
    rng = np.random.default_rng(seed)
    z = np.arange(n_part) % 2
    frail = rng.gamma(2.0, 0.5, n_part)
    follow = rng.integers(120, 183, n_part)
    n_ev = rng.poisson(0.02 * 0.32**z * frail * follow)
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
    arm = pd.Categorical.from_codes(z[sub], ["control", "intervention"])
    return pd.DataFrame(
        {"participant_id": sub, "arm": arm, "start": start, "stop": stop, "event": event}
    )


def timed(label: str, fn, repeat: int):
    """Best wall and CPU time of `repeat` calls, and the peak traced memory of the first."""
    walls, cpus, peak, out = [], [], 0, None
    for k in range(repeat):
        if k == 0:
            tracemalloc.start()
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        if k == 0:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    print(
        f"{label:<56} wall {min(walls):6.3f} s  cpu {min(cpus):6.3f} s  peak {peak / 2**20:5.0f} MB"
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--participants", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    cp = simulate_cp(args.participants)
    n_times = int(cp.loc[cp["event"] == 1, "stop"].nunique())
    print(
        f"participants {args.participants:,}  rows {len(cp):,}  "
        f"events {int(cp['event'].sum()):,}  event days {n_times:,}"
    )
    spec = ModelSpec("marginal_mean", "marginal_mean")
    res = timed(
        "marginal_mean fit (fit_spec, all tables)",
        lambda: fit_spec(spec, {"counting_process": cp}),
        args.repeat,
    )
    tau = float(res.extras["means"]["tau"].iloc[0])
    ctrl = cp[cp["arm"] == "control"]
    timed("  mean_at, control arm", lambda: mean_at(ctrl, tau), args.repeat)
    timed(
        "  pseudo_score_test",
        lambda: pseudo_score_test(cp, tau, "intervention"),
        args.repeat,
    )
    beta = float(res.table["estimate"].iloc[0])
    timed(
        "proportional_rates_mean (AG mean function, given beta)",
        lambda: proportional_rates_mean(cp, beta, control="control", intervention="intervention"),
        args.repeat,
    )
    timed(
        "mean_cumulative_function, both arms (whole curves)",
        lambda: [mean_cumulative_function(cp[cp["arm"] == a]) for a in ("control", "intervention")],
        args.repeat,
    )
    row = res.table.iloc[0]
    m = res.extras["means"].set_index("arm")
    ps = res.extras["pseudo_score"].iloc[0]
    print(
        f"tau {tau:g}: means {m.loc['control', 'mean']:.4f} (SE {m.loc['control', 'std_err']:.5f})"
        f" vs {m.loc['intervention', 'mean']:.4f} (SE {m.loc['intervention', 'std_err']:.5f}); "
        f"ratio {row['exp_estimate']:.4f} ({row['exp_conf_low']:.4f}-{row['exp_conf_high']:.4f}); "
        f"pseudo-score chi2 {ps['statistic']:.1f}"
    )
    print(f"load average at end: {os.getloadavg()[0]:.2f} (wall time is inflated when > 2)")


if __name__ == "__main__":
    main()
