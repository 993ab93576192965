"""Evaluate the study's claims against the estimates: estimate, interval, tests and a verdict.

A claim says the intervention reduced something by a fraction ``claimed`` (0.68 = 68%). Its
estimate is read from one model's intervention term:

- ``rate_reduction`` / ``hazard_reduction``: ``1 - exp(beta)`` (1 - rate ratio / hazard ratio),
  with the interval ``1 - exp(conf_high) .. 1 - exp(conf_low)``; the test against the claimed
  value is the Wald z of ``beta - log(1 - claimed)``.
- ``pain_reduction``: the percent reduction of mean pain from baseline in the intervention arm at
  the claim week, from the pain model's ``percent_change`` table (delta-method interval).

The verdict, with reduction scale estimate ``r``, interval ``[lo, hi]`` and claimed ``c``
(see :func:`verdict`, tested on constructed cases):

1. ``not estimable``: the model did not converge, or the estimate or its interval is missing.
2. ``c`` inside ``[lo, hi]``: ``supported`` if the interval also excludes no effect (``lo > 0``)
   and, when an equivalence ``margin`` is given, lies within ``[c - margin, c + margin]``;
   otherwise ``consistent but imprecise``.
3. ``hi < c`` (the data rule out an effect as large as claimed): ``smaller than claimed`` if the
   interval still excludes no effect (``lo > 0``), else ``contradicted``.
4. ``lo > c`` (the effect is larger than claimed): ``supported`` (the claim is conservative).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from scipy import stats

from recurstudy.contract import ARM, arm_labels, intervention_term

VERDICTS = (
    "supported",
    "consistent but imprecise",
    "smaller than claimed",
    "contradicted",
    "not estimable",
)

DEFAULT_MODEL = {
    "rate_reduction": "negbin_rate",
    "hazard_reduction": "andersen_gill",
    "pain_reduction": "pain_mixed",
}

CLAIM_COLUMNS = [
    "claim_id",
    "statement",
    "metric",
    "model",
    "claimed",
    "estimate",
    "conf_low",
    "conf_high",
    "claimed_in_ci",
    "p_value_no_effect",
    "p_value_claimed",
    "verdict",
    "reason",
]


def verdict(
    estimate: float, lo: float, hi: float, claimed: float, margin: float | None = None
) -> tuple[str, str]:
    """The verdict and its reason for a reduction estimate with interval [lo, hi]."""
    if any(v is None or not math.isfinite(v) for v in (estimate, lo, hi)):
        return "not estimable", "no estimate or interval"
    if lo <= claimed <= hi:
        if lo <= 0:
            return "consistent but imprecise", "the interval holds the claim and no effect"
        if margin is not None and (lo < claimed - margin or hi > claimed + margin):
            return (
                "consistent but imprecise",
                f"the interval holds the claim but is wider than the margin ±{margin:g}",
            )
        return "supported", "the interval holds the claim and excludes no effect"
    if hi < claimed:
        if lo > 0:
            return "smaller than claimed", "the interval excludes the claim and no effect"
        return "contradicted", "the interval excludes the claim but not no effect"
    return "supported", "the effect is larger than claimed (the interval lies above it)"


def _two_sided(z: float) -> float:
    return float(2.0 * stats.norm.sf(abs(z))) if math.isfinite(z) else float("nan")


def _ratio_claim(row: pd.Series, claimed: float) -> dict[str, Any]:
    beta, se = float(row["estimate"]), float(row["std_error"])
    lo, hi = float(row["conf_low"]), float(row["conf_high"])
    z_claim = (beta - math.log(1.0 - claimed)) / se if claimed < 1 and se > 0 else float("nan")
    return {
        "estimate": 1.0 - math.exp(beta),
        "conf_low": 1.0 - math.exp(hi),
        "conf_high": 1.0 - math.exp(lo),
        "p_value_no_effect": float(row["p_value"]),
        "p_value_claimed": _two_sided(z_claim),
    }


def _pain_claim(pc: pd.DataFrame, arm: str, week: int, claimed: float) -> dict[str, Any]:
    row = pc[(pc[ARM].astype(str) == arm) & (pc["week"] == week)]
    if row.empty:
        raise KeyError(f"no percent change for arm {arm} at week {week}")
    r = row.iloc[0]
    # percent_change holds the (negative) change from baseline; a reduction is its negative.
    est = -float(r["percent_change"]) / 100.0
    lo, hi = -float(r["conf_high"]) / 100.0, -float(r["conf_low"]) / 100.0
    se = (hi - lo) / (2 * stats.norm.ppf(0.975))
    return {
        "estimate": est,
        "conf_low": lo,
        "conf_high": hi,
        "p_value_no_effect": _two_sided(est / se) if se > 0 else float("nan"),
        "p_value_claimed": _two_sided((est - claimed) / se) if se > 0 else float("nan"),
    }


def evaluate_claim(
    claim: dict[str, Any], estimates: pd.DataFrame, models_dir: str | Path, config: dict[str, Any]
) -> dict[str, Any]:
    """One row of results/claims.csv for `claim` (a config entry)."""
    metric = claim["metric"]
    model = claim.get("model") or DEFAULT_MODEL[metric]
    claimed = float(claim["claimed"])
    out: dict[str, Any] = {
        "claim_id": claim["id"],
        "statement": claim["statement"],
        "metric": metric,
        "model": model,
        "claimed": claimed,
    }
    intervention = arm_labels(config)[1]
    term = intervention_term(config)
    rows = estimates[(estimates["model"] == model) & (estimates["term"] == term)]
    values: dict[str, Any] = {}
    why = ""
    if model not in set(estimates["model"]):
        why = f"model {model} is not among the fitted models"
    elif rows.empty or not bool(rows.iloc[0]["converged"]):
        msg = "" if rows.empty else str(rows.iloc[0].get("message", ""))
        why = f"model {model} gave no estimate" + (f" ({msg})" if msg and msg != "nan" else "")
    elif metric == "pain_reduction":
        week = int(claim.get("week", 6))
        path = Path(models_dir) / model / "percent_change.csv"
        try:
            values = _pain_claim(pd.read_csv(path), intervention, week, claimed)
        except (OSError, KeyError) as exc:
            why = f"no percent change from the pain model: {exc}"
    else:
        values = _ratio_claim(rows.iloc[0], claimed)
    out.update(values)
    if values:
        v, reason = verdict(
            values["estimate"],
            values["conf_low"],
            values["conf_high"],
            claimed,
            claim.get("margin"),
        )
        out["claimed_in_ci"] = bool(values["conf_low"] <= claimed <= values["conf_high"])
    else:
        v, reason = "not estimable", why
    out["verdict"], out["reason"] = v, reason
    return out


def evaluate_claims(
    config: dict[str, Any], estimates: pd.DataFrame, models_dir: str | Path
) -> pd.DataFrame:
    """Every configured claim evaluated (results/claims.csv)."""
    rows = [evaluate_claim(c, estimates, models_dir, config) for c in config.get("claims", [])]
    return pd.DataFrame(rows).reindex(columns=CLAIM_COLUMNS)


def add_power(table: pd.DataFrame, power: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Join each claim's simulated power (power, Monte Carlo SE, minimum detectable effect)."""
    out = table.copy()
    keys = ["power", "power_mc_se", "mde_80", "mde_80_mc_se", "replicates"]
    for key in keys:
        out[key] = [power.get(cid, {}).get(key) for cid in out["claim_id"]]
    out["power_note"] = [
        power[cid].get("note", "")
        if cid in power
        else "power by simulation covers rate and hazard claims"
        for cid in out["claim_id"]
    ]
    return out


def write_claims(table: pd.DataFrame, csv: str | Path, json_path: str | Path) -> None:
    """Write claims as CSV and JSON (deterministic)."""
    from recurstudy.models import write_csv

    write_csv(table, csv)
    records = json.loads(table.to_json(orient="records", double_precision=12))
    Path(json_path).write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")


def e_value(rr: float, lo: float, hi: float) -> dict[str, float]:
    """VanderWeele and Ding's E-value for a rate ratio and the interval limit nearest to 1."""

    def ev(r: float) -> float:
        r = 1.0 / r if r < 1 else r
        return float(r + math.sqrt(r * (r - 1.0)))

    if lo <= 1.0 <= hi:
        limit = 1.0
    else:
        limit = hi if rr < 1 else lo
    return {"e_value": ev(rr), "e_value_ci": ev(limit) if limit != 1.0 else 1.0}


__all__ = ["VERDICTS", "add_power", "e_value", "evaluate_claims", "verdict", "write_claims"]
