"""Event rates per arm, their ratio and their difference: the numbers of the report's first
screen, computed here (``results/rates.csv``) so that each one is traceable.

Estimand (every quantity): the *marginal event rate* of an arm, total events over total time at
risk of the analysed participants (``counts``: ``n_episodes`` over ``exposure_days``, the same
risk set and exposure as the count models; time inside episodes excluded when the config says
so, as in the derivation). All events are counted; follow-up ends at the participant's end of
follow-up whatever the reason (no imputation after dropout: a treatment-policy rate over observed
time at risk).

Variance: participant-level robust (sandwich), i.e. the HC0 sandwich of the intercept-only
Poisson GLM with log-exposure offset (R: ``glm(y ~ 1 + offset(log(t)), family = poisson)`` with
``sandwich::vcovHC(fit, type = "HC0")``): ``Var(log r) = sum_i (y_i - r t_i)^2 / (sum_i y_i)^2``.
It stays valid under overdispersion (a negative binomial or frailty process), unlike the exact
Poisson interval. Intervals are Wald 95% on the log scale for the rates and the rate ratio (arms
independent: ``Var(log RR) = Var(log r1) + Var(log r0)``; the same estimate and SE as the
``poisson`` model with HC0 errors) and on the natural scale for the rate difference (delta
method: ``Var(r) = r^2 Var(log r)``, ``Var(r1 - r0) = Var(r1) + Var(r0)``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from recurstudy.contract import ARM, arm_labels
from recurstudy.lazy import lazy_import

stats = lazy_import("scipy.stats")

DAYS_PER_YEAR = 365.25
DAYS_PER_MONTH = DAYS_PER_YEAR / 12

RATE_COLUMNS = [
    "quantity",
    "arm",
    "participants",
    "events",
    "exposure_days",
    "estimate",
    "std_error",
    "conf_low",
    "conf_high",
    "scale",
    "unit",
    "interval",
]

INTERVAL_TEXT = "Wald 95%, participant-level robust (HC0 sandwich) SE"

ESTIMAND = (
    "marginal event rate per arm: all events over all time at risk of the analysed participants "
    "(observed follow-up, no imputation after dropout)"
)


def _z(conf: float) -> float:
    return float(stats.norm.ppf(0.5 + conf / 2.0))


def arm_rate(events: np.ndarray, exposure_days: np.ndarray) -> tuple[float, float]:
    """``(rate per day, robust SE of log rate)`` of one arm: sum(y) / sum(t), and
    ``sqrt(sum (y_i - r t_i)^2) / sum(y)`` (the HC0 sandwich of the intercept-only Poisson GLM).

    The SE is ``nan`` with no events (the log rate is not defined) and the rate is ``nan`` with
    no exposure.
    """
    y = np.asarray(events, dtype=float)
    t = np.asarray(exposure_days, dtype=float)
    total_t = float(t.sum())
    total_y = float(y.sum())
    if total_t <= 0:
        return float("nan"), float("nan")
    r = total_y / total_t
    if total_y <= 0:
        return r, float("nan")
    return r, float(math.sqrt(float(np.sum((y - r * t) ** 2))) / total_y)


def rate_summary(
    counts: pd.DataFrame, config: Mapping[str, Any], conf: float = 0.95
) -> pd.DataFrame:
    """Per-arm rates, the rate ratio and the rate difference (intervention minus control) as a
    tidy table (:data:`RATE_COLUMNS`), one row per quantity and unit.

    ``quantity``: ``rate`` (one row per arm and per unit: ``per 100 participant-months`` and
    ``per participant-year``), ``rate_ratio`` (intervention / control) and ``rate_difference``
    (intervention minus control, ``per 100 participant-years``; negative = events prevented).
    Participants with no time at risk count as participants but add nothing. ``scale`` says on
    which scale the interval is Wald (``log`` or ``natural``). Counts are exact (this is a result
    file: the report applies the disclosure rule when it prints them).
    """
    control, intervention = arm_labels(config)
    z = _z(conf)
    arm = counts[ARM].astype(str)
    per_arm: dict[str, dict[str, float]] = {}
    rows: list[dict[str, Any]] = []
    for label in (control, intervention):
        sub = counts[arm.to_numpy() == label]
        y = sub["n_episodes"].to_numpy(float)
        t = sub["exposure_days"].to_numpy(float)
        r, se_log = arm_rate(y, t)
        per_arm[label] = {
            "n": len(sub),
            "k": float(y.sum()),
            "t": float(t.sum()),
            "r": r,
            "se_log": se_log,
        }
        for unit, days in (
            ("per 100 participant-months", 100 * DAYS_PER_MONTH),
            (
                "per participant-year",
                DAYS_PER_YEAR,
            ),
        ):
            est = r * days
            if math.isfinite(se_log):
                low, high = est * math.exp(-z * se_log), est * math.exp(z * se_log)
            else:
                low = high = float("nan")
            rows.append(
                {
                    "quantity": "rate",
                    "arm": label,
                    "participants": len(sub),
                    "events": int(y.sum()),
                    "exposure_days": float(t.sum()),
                    "estimate": est,
                    "std_error": est * se_log if math.isfinite(se_log) else float("nan"),
                    "conf_low": low,
                    "conf_high": high,
                    "scale": "log",
                    "unit": unit,
                    "interval": INTERVAL_TEXT,
                }
            )
    a0, a1 = per_arm[control], per_arm[intervention]
    both = {
        "arm": f"{intervention} vs {control}",
        "participants": int(a0["n"] + a1["n"]),
        "events": int(a0["k"] + a1["k"]),
        "exposure_days": a0["t"] + a1["t"],
        "interval": INTERVAL_TEXT,
    }
    ok = all(math.isfinite(a["se_log"]) and a["r"] > 0 for a in (a0, a1))
    rr = a1["r"] / a0["r"] if a0["r"] and math.isfinite(a0["r"]) else float("nan")
    se = math.hypot(a0["se_log"], a1["se_log"]) if ok else float("nan")
    rows.append(
        {
            **both,
            "quantity": "rate_ratio",
            "estimate": rr,
            "std_error": se,  # of log RR
            "conf_low": rr * math.exp(-z * se) if ok else float("nan"),
            "conf_high": rr * math.exp(z * se) if ok else float("nan"),
            "scale": "log",
            "unit": "ratio",
        }
    )
    per100y = 100 * DAYS_PER_YEAR
    diff = (a1["r"] - a0["r"]) * per100y
    var = sum((a["r"] * a["se_log"] * per100y) ** 2 for a in (a0, a1)) if ok else float("nan")
    sd = math.sqrt(var) if ok else float("nan")
    rows.append(
        {
            **both,
            "quantity": "rate_difference",
            "estimate": diff,
            "std_error": sd,
            "conf_low": diff - z * sd,
            "conf_high": diff + z * sd,
            "scale": "natural",
            "unit": "per 100 participant-years",
        }
    )
    return pd.DataFrame(rows, columns=RATE_COLUMNS)
