"""Evaluate the study's claims against the estimates: estimate, interval, tests and a verdict.

A claim says the intervention reduced something by a fraction ``claimed`` (0.68 = 68%). Its
estimate is read from one model's intervention term:

- ``rate_reduction`` / ``hazard_reduction``: ``1 - exp(beta)`` (1 - rate ratio / hazard ratio),
  with Wald intervals on the log-ratio scale mapped to the reduction scale; the test against the
  claimed value is the Wald z of ``beta - log(1 - claimed)``.
- ``pain_reduction``, by the claim's ``contrast``:

  - ``between_arm`` (default): ``1 - mean_I(w) / mean_C(w)``, the reduction of mean NRS at the
    claim week ``w`` in the intervention arm relative to the control arm, from the pain model's
    ``between_arm`` table, method ``cLDA`` (constrained longitudinal analysis, all visits,
    missing visits MAR; see :func:`_between_arm_claim`). Working scale: the log ratio (delta
    method), as for rate and hazard claims.
  - ``within_arm`` (descriptive: includes the control arm's own change): the percent reduction
    of mean NRS from baseline in the intervention arm (see :func:`_pain_claim`).

**The verdict rule** (:func:`verdict`; written in the README and the report's methods, tested on
constructed cases and public data). With ``c`` the claimed reduction, ``m`` the equivalence
margin (``margin``, default 0.10 on the reduction scale), and Wald intervals computed on the
estimate's working scale (log ratio for ratio claims) and mapped to the reduction scale:

1. ``not estimable``: the model did not converge, or the estimate or its standard error is
   missing;
2. ``supported``: the 90% interval lies within ``[c - m, c + m]``, i.e. both one-sided tests of
   the equivalence bounds reject at 5% (TOST; ``p_value_tost`` is the larger one-sided p); for a
   secondary claim the multiplicity-adjusted TOST p-value must be below 0.05;
3. ``larger than claimed``: the whole 95% interval lies above ``c``;
4. ``smaller than claimed``: the whole 95% interval lies below ``c`` and excludes no effect;
5. ``contradicted``: the whole 95% interval lies below ``c`` and includes no effect;
6. ``consistent but imprecise``: ``c`` lies inside the 95% interval, which is too wide for
   ``supported``.

**Multiplicity.** One claim is primary (``primary: true``; the first claim when none is marked);
the others are secondary. The primary is tested at 5%; the secondary claims are tested either
in the declared order (``multiplicity: fixed_sequence``: each claim's adjusted p is the largest
TOST p of the claims up to it, the primary included) or, gated by the primary, with Holm's
step-down correction among themselves (``multiplicity: holm``, the default: adjusted p =
max(Holm p, primary's p)). ``p_value_adjusted`` holds the adjusted TOST p-value; a secondary
claim is ``supported`` only when it is below 0.05.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recurstudy.contract import ARM, arm_labels, intervention_term
from recurstudy.lazy import lazy_import

stats = lazy_import("scipy.stats")

VERDICTS = (
    "supported",
    "larger than claimed",
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
DEFAULT_MARGIN = 0.10
ALPHA = 0.05

CLAIM_COLUMNS = [
    "claim_id",
    "statement",
    "metric",
    "model",
    "primary",
    "contrast",
    "claimed",
    "margin",
    "estimate",
    "conf_low",
    "conf_high",
    "conf_low_90",
    "conf_high_90",
    "interval",
    "claimed_in_ci",
    "p_value_no_effect",
    "p_value_claimed",
    "p_value_tost",
    "p_value_adjusted",
    "multiplicity",
    "verdict",
    "reason",
    "intercurrent_strategy",
]


@cache
def z_quantile(p: float) -> float:
    """The standard normal quantile at `p` (scipy's, computed on first use: importing
    scipy.stats at module level cost every Snakemake start-up about a second)."""
    return float(stats.norm.ppf(p))


_MAX_LOG = math.log(sys.float_info.max)  # exp() of more overflows


def to_reduction(x: float, scale: str) -> float:
    """A working-scale value as a reduction: ``1 - exp(x)`` for a log ratio, ``x`` itself for a
    reduction (decreasing in `x` on the log-ratio scale). A ratio beyond the floats (a
    degenerate fit's interval on a tiny cohort) is a reduction of -inf, not an OverflowError."""
    if scale == "log_ratio":
        return -math.inf if x > _MAX_LOG else 1.0 - math.exp(x)
    return float(x)


def from_reduction(r: float, scale: str) -> float:
    """A reduction on the working scale (``log(1 - r)``; -inf for r >= 1, as no ratio is <= 0)."""
    if scale == "log_ratio":
        return math.log(1.0 - r) if r < 1.0 else -math.inf
    return float(r)


def interval(x: float, se: float, z: float, scale: str) -> tuple[float, float]:
    """The Wald interval ``x -/+ z se`` on the working scale, as a reduction (low, high)."""
    a, b = to_reduction(x - z * se, scale), to_reduction(x + z * se, scale)
    return (min(a, b), max(a, b))


def tost_p(x: float, se: float, claimed: float, margin: float, scale: str) -> float:
    """The two-one-sided-tests p-value of ``claimed - margin < reduction < claimed + margin``:
    the larger of the two one-sided Wald p-values (its 90% interval lies within the bounds
    exactly when it is below 0.05)."""
    lower, upper = claimed - margin, claimed + margin
    # On the reduction scale H0a: r <= lower, H0b: r >= upper; on the log-ratio scale these are
    # x >= log(1 - lower) and x <= log(1 - upper) (the map is decreasing).
    ps = []
    for bound, above in ((lower, True), (upper, False)):
        w = from_reduction(bound, scale)
        if not math.isfinite(w):
            ps.append(0.0)  # the bound is outside the parameter space: always rejected
            continue
        z = (x - w) / se
        if scale == "log_ratio":
            z = -z  # a larger reduction is a smaller log ratio
        ps.append(float(stats.norm.sf(z)) if above else float(stats.norm.cdf(z)))
    return max(ps)


def verdict(
    x: float,
    se: float,
    claimed: float,
    margin: float = DEFAULT_MARGIN,
    scale: str = "log_ratio",
    p_tost: float | None = None,
) -> tuple[str, str]:
    """The verdict and its reason (see the module docstring) for a working-scale estimate `x`
    with standard error `se`. `p_tost` overrides the TOST p-value (a multiplicity-adjusted one
    for secondary claims)."""
    if any(v is None or not math.isfinite(v) for v in (x, se)) or not se > 0:
        return "not estimable", "no estimate or standard error"
    lo, hi = interval(x, se, z_quantile(0.975), scale)
    lo90, hi90 = interval(x, se, z_quantile(0.95), scale)
    p = tost_p(x, se, claimed, margin, scale) if p_tost is None else p_tost
    within = f"within the claim ±{margin:g} ({_pct(claimed - margin)} to {_pct(claimed + margin)})"
    if p < ALPHA:
        return "supported", f"the 90% interval ({_pct(lo90)} to {_pct(hi90)}) lies {within}"
    if lo > claimed:
        return "larger than claimed", "the whole 95% interval lies above the claim"
    if hi < claimed:
        if lo > 0:
            return (
                "smaller than claimed",
                "the 95% interval lies below the claim, excludes no effect",
            )
        return "contradicted", "the 95% interval lies below the claim and includes no effect"
    if lo90 >= claimed - margin and hi90 <= claimed + margin:
        # within the bounds but the (adjusted) TOST p is not below alpha: multiplicity
        return (
            "consistent but imprecise",
            f"the 90% interval lies {within}, but the multiplicity-adjusted p-value is "
            f"{p:.3g} (not below {ALPHA:g})",
        )
    return (
        "consistent but imprecise",
        f"the 95% interval holds the claim, but the 90% interval ({_pct(lo90)} to {_pct(hi90)}) "
        f"is not {within}",
    )


def _pct(r: float) -> str:
    return f"{100 * r:.0f}%"


def _two_sided(z: float) -> float:
    return float(2.0 * stats.norm.sf(abs(z))) if math.isfinite(z) else float("nan")


def _ratio_claim(row: pd.Series, claimed: float) -> dict[str, Any]:
    beta, se = float(row["estimate"]), float(row["std_error"])
    z_claim = (beta - math.log(1.0 - claimed)) / se if claimed < 1 and se > 0 else float("nan")
    robust = str(row.get("robust")).lower() in ("true", "1", "1.0")
    return {
        "scale": "log_ratio",
        "x": beta,
        "se": se,
        "interval": f"Wald, {'robust (sandwich)' if robust else 'model-based'} SE",
        "p_value_no_effect": float(row["p_value"]),
        "p_value_claimed": _two_sided(z_claim),
    }


PAIN_CONTRASTS = ("between_arm", "within_arm")


def _between_arm_claim(ba: pd.DataFrame, week: int, claimed: float) -> dict[str, Any]:
    """Between-arm reduction of mean NRS at `week`, ``1 - mean_I / mean_C``, from the cLDA row of
    the pain model's ``between_arm`` table: working scale the log ratio with its delta-method
    SE (model-based, lme4's vcov)."""
    row = ba[(ba["method"] == "cLDA") & (ba["week"] == week)]
    if row.empty:
        raise KeyError(f"no between-arm contrast at week {week}")
    r = row.iloc[0]
    if str(r["converged"]).lower() not in ("true", "1", "1.0"):
        raise KeyError(f"the cLDA did not converge ({r['message']})")
    x, se = float(r["log_ratio"]), float(r["se_log_ratio"])
    z_claim = (x - math.log(1.0 - claimed)) / se if claimed < 1 and se > 0 else float("nan")
    return {
        "scale": "log_ratio",
        "x": x,
        "se": se,
        "interval": "Wald on the log ratio, delta method, model-based SE (cLDA)",
        "p_value_no_effect": float(r["p_value"]),
        "p_value_claimed": _two_sided(z_claim),
    }


def _pain_claim(pc: pd.DataFrame, arm: str, week: int, claimed: float) -> dict[str, Any]:
    """Within-arm percent reduction of mean NRS from baseline (descriptive: it includes the
    control arm's own change), from the pain model's ``percent_change`` table."""
    row = pc[(pc[ARM].astype(str) == arm) & (pc["week"] == week)]
    if row.empty:
        raise KeyError(f"no percent change for arm {arm} at week {week}")
    r = row.iloc[0]
    # percent_change holds the (negative) change from baseline; a reduction is its negative.
    est = -float(r["percent_change"]) / 100.0
    se = float(r["se_percent_change"]) / 100.0
    return {
        "scale": "reduction",
        "x": est,
        "se": se,
        "interval": "Wald, delta method, model-based SE",
        "p_value_no_effect": _two_sided(est / se) if se > 0 else float("nan"),
        "p_value_claimed": _two_sided((est - claimed) / se) if se > 0 else float("nan"),
    }


def claim_model(claim: Mapping[str, Any]) -> str:
    """The model a claim reads (its `model`, or the metric's default)."""
    return str(claim.get("model") or DEFAULT_MODEL[claim["metric"]])


def evaluate_claim(
    claim: dict[str, Any], estimates: pd.DataFrame, models_dir: str | Path, config: dict[str, Any]
) -> dict[str, Any]:
    """One row of results/claims.csv for `claim` (a config entry), judged on its own TOST
    p-value (as a primary claim); :func:`evaluate_claims` applies the multiplicity rule."""
    metric = claim["metric"]
    model = claim_model(claim)
    claimed = float(claim["claimed"])
    margin = claim.get("margin")
    margin = DEFAULT_MARGIN if margin is None else float(margin)
    out: dict[str, Any] = {
        "claim_id": claim["id"],
        "statement": claim["statement"],
        "metric": metric,
        "model": model,
        "primary": bool(claim.get("primary", False)),
        # pain claims: between_arm (default) or within_arm; rate and hazard claims: empty
        "contrast": (claim.get("contrast") or "between_arm") if metric == "pain_reduction" else "",
        "claimed": claimed,
        "margin": margin,
    }
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
        contrast = out["contrast"]
        try:
            if contrast == "between_arm":
                ba = pd.read_csv(Path(models_dir) / model / "between_arm.csv")
                values = _between_arm_claim(ba, week, claimed)
            elif contrast == "within_arm":
                pc = pd.read_csv(Path(models_dir) / model / "percent_change.csv")
                values = _pain_claim(pc, arm_labels(config)[1], week, claimed)
            else:
                raise KeyError(f"contrast must be one of {', '.join(PAIN_CONTRASTS)}")
        except (OSError, KeyError) as exc:
            why = f"no {contrast.replace('_', '-')} contrast from the pain model: {exc}"
    else:
        values = _ratio_claim(rows.iloc[0], claimed)
    if values and not (math.isfinite(values["x"]) and values["se"] > 0):
        why, values = f"model {model} gave no finite estimate and standard error", {}
    if values:
        x, se, scale = values.pop("x"), values.pop("se"), values.pop("scale")
        out["estimate"] = to_reduction(x, scale)
        out["conf_low"], out["conf_high"] = interval(x, se, z_quantile(0.975), scale)
        out["conf_low_90"], out["conf_high_90"] = interval(x, se, z_quantile(0.95), scale)
        out["claimed_in_ci"] = bool(out["conf_low"] <= claimed <= out["conf_high"])
        out["p_value_tost"] = tost_p(x, se, claimed, margin, scale)
        out.update(values)
        out["verdict"], out["reason"] = verdict(x, se, claimed, margin, scale)
        out["_working"] = (x, se, scale)  # for the multiplicity-adjusted verdict
    else:
        out["verdict"], out["reason"] = "not estimable", why
    return out


def adjust_p_values(p: Sequence[float | None], method: str) -> list[float]:
    """Adjusted p-values in the declared order (the primary first): ``fixed_sequence`` (each is
    the largest p up to it: a claim is tested only when those before it were rejected) or
    ``holm`` (Holm's step-down). Missing p-values stay missing and do not stop the sequence
    from being reported (they count as not rejected: 1.0)."""
    q = np.array([1.0 if v is None or not math.isfinite(v) else float(v) for v in p])
    if method == "fixed_sequence":
        adj = np.maximum.accumulate(q)
    elif method == "holm":
        m = len(q)
        order = np.argsort(q, kind="stable")
        stepped = np.maximum.accumulate((m - np.arange(m)) * q[order])
        adj = np.empty(m)
        adj[order] = np.minimum(stepped, 1.0)
    else:
        raise ValueError(f"unknown multiplicity method {method!r} (fixed_sequence or holm)")
    return [
        float("nan") if v is None or not math.isfinite(v) else float(a)
        for v, a in zip(p, adj, strict=True)
    ]


def ordered_claims(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The claims with the primary first (the first claim when none is marked), then the
    secondary ones in the declared order; each with ``primary`` set."""
    claims = [dict(c) for c in config.get("claims") or []]
    if not claims:
        return []
    marked = [i for i, c in enumerate(claims) if c.get("primary")]
    first = marked[0] if marked else 0
    claims = [claims[first]] + [c for i, c in enumerate(claims) if i != first]
    for i, c in enumerate(claims):
        c["primary"] = i == 0
    return claims


def evaluate_claims(
    config: dict[str, Any], estimates: pd.DataFrame, models_dir: str | Path
) -> pd.DataFrame:
    """Every configured claim evaluated (results/claims.csv): primary first, multiplicity-adjusted
    TOST p-values, and the verdicts (secondary claims judged on their adjusted p)."""
    method = str(config.get("multiplicity") or "holm")
    rows = [evaluate_claim(c, estimates, models_dir, config) for c in ordered_claims(config)]
    p: list[float | None] = [r.get("p_value_tost") for r in rows]
    if method == "holm" and len(rows) > 1:
        # The primary is tested at alpha; it gates the secondary family, Holm-corrected within.
        gate = adjust_p_values(p[:1], "fixed_sequence")[0]
        holm = adjust_p_values(p[1:], "holm")
        first = float("nan") if p[0] is None else float(p[0])
        adjusted = [first, *(max(h, gate) if math.isfinite(h) else h for h in holm)]
    else:
        adjusted = adjust_p_values(p, "fixed_sequence")
    for row, p_adj in zip(rows, adjusted, strict=True):
        row["multiplicity"] = "" if row["primary"] else method
        row["p_value_adjusted"] = p_adj
        working = row.pop("_working", None)
        if working is not None:
            x, se, scale = working
            row["verdict"], row["reason"] = verdict(
                x, se, row["claimed"], row["margin"], scale, p_tost=p_adj
            )
    strategies = _claim_strategies(config, [r["model"] for r in rows])
    for row in rows:
        row["intercurrent_strategy"] = strategies.get(row["model"], "")
    return pd.DataFrame(rows).reindex(columns=CLAIM_COLUMNS)


def strategy_text(
    strategies: Sequence[tuple[str, str]],
    terminal: Sequence[str],
    dropout: Sequence[str],
) -> str:
    """A model's ICH E9(R1) strategies (:attr:`ModelDescription.strategies`) for the config's
    intercurrent events, as one text: ``death (terminal event): while alive: ...; withdrawn
    (informative dropout): hypothetical: ...``; an event type the config lists no end reason
    for is left out."""
    labels = {"terminal event": list(terminal), "informative dropout": list(dropout)}
    parts = [
        f"{', '.join(labels[event])} ({event}): {sentence}"
        for event, sentence in strategies
        if labels.get(event)
    ]
    return "; ".join(parts)


def _claim_strategies(config: Mapping[str, Any], models: Sequence[str]) -> dict[str, str]:
    """The strategy text of each model a claim reads (empty when the model is not configured:
    its claim is then not estimable anyway)."""
    from recurstudy.config import informative_dropout, terminal_events
    from recurstudy.models import described_models

    try:
        described = described_models(dict(config))
    except (KeyError, ValueError):
        return {}
    terminal, dropout = terminal_events(config), informative_dropout(config)
    return {
        m: strategy_text(described[m].strategies, terminal, dropout)
        for m in models
        if m in described
    }


AGREEMENT_COLUMNS = [
    "claim_id",
    "model",
    "title",
    "group",
    "primary_model",
    "estimate",
    "conf_low",
    "conf_high",
    "same_direction",
    "claim_in_ci",
    "agrees",
    "verdict",
]


def sensitivity_agreement(
    config: dict[str, Any], estimates: pd.DataFrame, claims: pd.DataFrame
) -> pd.DataFrame:
    """Every ratio model other than a rate or hazard claim's own, as a sensitivity analysis of
    that claim: its reduction and 95% interval, whether it agrees (same direction as the
    claim's estimate, claim inside its interval) and the verdict the same rule would give it
    (unadjusted, the claim's margin)."""
    from recurstudy.models import described_models

    described = described_models(config)
    term = intervention_term(config)
    arm = estimates[(estimates["term"] == term)].drop_duplicates("model").set_index("model")
    rows = []
    for c in claims.itertuples():
        if c.metric == "pain_reduction":
            continue
        for name, d in described.items():
            if name == c.model or not d.ratio or name not in arm.index:
                continue
            r = arm.loc[name]
            row: dict[str, Any] = {
                "claim_id": c.claim_id,
                "model": name,
                "title": d.title,
                "group": d.group,
                "primary_model": c.model,
            }
            x, se = float(r["estimate"]), float(r["std_error"])
            if not (bool(r["converged"]) and math.isfinite(x) and math.isfinite(se) and se > 0):
                row["verdict"] = "not estimable"
                rows.append(row)
                continue
            lo, hi = interval(x, se, z_quantile(0.975), "log_ratio")
            est = to_reduction(x, "log_ratio")
            same = math.isfinite(c.estimate) and (est > 0) == (c.estimate > 0)
            inside = lo <= c.claimed <= hi
            row.update(
                estimate=est,
                conf_low=lo,
                conf_high=hi,
                same_direction=bool(same),
                claim_in_ci=bool(inside),
                agrees=bool(same and inside),
                verdict=verdict(x, se, c.claimed, c.margin, "log_ratio")[0],
            )
            rows.append(row)
    return pd.DataFrame(rows).reindex(columns=AGREEMENT_COLUMNS)


def add_power(table: pd.DataFrame, power: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Join each claim's simulated power (power, Monte Carlo SE, minimum detectable effect)."""
    out = table.copy()
    keys = [
        "power",
        "power_mc_se",
        "mde_80",
        "mde_80_mc_se",
        "mde_80_normal",
        "mde_80_note",
        "power_informative_dropout",
        "power_informative_dropout_mc_se",
        "informative_dropout_link",
        "replicates",
    ]
    for key in keys:
        out[key] = [power.get(cid, {}).get(key) for cid in out["claim_id"]]
    out["power_note"] = [
        power[cid].get("note", "") if cid in power else "no power simulation for this claim"
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


__all__ = [
    "VERDICTS",
    "add_power",
    "e_value",
    "evaluate_claims",
    "sensitivity_agreement",
    "verdict",
    "write_claims",
]
