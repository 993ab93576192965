"""Benchmark: the IPCW Andersen-Gill and negative binomial fits on simulated cohorts with
history-dependent withdrawal (tests/test_ipcw.py's simulator: 60 days, about 55% withdraw).

The rows are split at every distinct withdrawal time, so the pieces grow with participants x
distinct withdrawal days; prints participants, counting-process rows, pieces, and the CPU time
(process time: independent of other load) of each fit.
Usage: python benchmarks/bench_ipcw.py [n ...]   (default 2000 10000 50000)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_ipcw import simulate  # noqa: E402

from recurstudy.models import ModelSpec, fit_spec  # noqa: E402
from recurstudy.models.ipcw import dropout_rows, ipcw_weights  # noqa: E402


def main(sizes: list[int]) -> None:
    print(
        f"{'n':>8} {'rows':>9} {'pieces':>10} {'weights s':>10} {'ipcw AG s':>10} {'ipcw NB s':>10}"
    )
    for n in sizes:
        cp, participants = simulate(n, 1)
        t0 = time.process_time()
        d = dropout_rows(cp, participants, ["withdrawn"])
        pieces = ipcw_weights(cp, d, [], arms=("control", "intervention")).pieces
        t_w = time.process_time() - t0
        data = {"counting_process": cp, "participants": participants}
        times = []
        for kind in ("ipcw_andersen_gill", "ipcw_negbin"):
            t0 = time.process_time()
            res = fit_spec(ModelSpec("m", kind), data)
            times.append(time.process_time() - t0)
            assert res.converged, res.message
        print(
            f"{n:>8} {len(cp):>9} {len(pieces):>10} {t_w:>10.2f}"
            f" {times[0]:>10.2f} {times[1]:>10.2f}"
        )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [2000, 10000, 50000])
