"""Sensitivity of the intervention effect: across models, crude against adjusted, and, for
observational cohorts, inverse-probability-of-treatment weighting and the E-value.

- :func:`forest` gathers the intervention term of every model (the data behind a forest plot),
  with the E-value of each ratio (VanderWeele & Ding 2017).
- :func:`crude_vs_adjusted` pairs each model with its ``_adjusted`` variant.
- :func:`iptw` fits a propensity score (logistic regression of arm on the ``adjust_for``
  covariates), forms stabilised weights, checks balance (standardised mean differences before and
  after weighting) and fits a weighted Poisson rate model with robust (HC0) errors, the usual
  marginal-structural-model estimate of the rate ratio.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from recurstudy.claims import e_value
from recurstudy.contract import ARM, arm_labels, intervention_term
from recurstudy.lazy import lazy_import
from recurstudy.models.base import design

stats = lazy_import("scipy.stats")

__all__ = [
    "adjusted_pairs",
    "control_risk",
    "crude_vs_adjusted",
    "e_value_row",
    "forest",
    "intervention_term",
    "iptw",
]

COMMON_OUTCOME = 0.15  # control-arm risk above which a hazard ratio is not a risk ratio


def hr_to_rr_common(hr: float) -> float:
    """VanderWeele's conversion of a hazard ratio of a common outcome (risk > 15% by the end of
    follow-up) to the risk-ratio scale: ``(1 - 0.5^sqrt(HR)) / (1 - 0.5^sqrt(1/HR))``."""
    return (1.0 - 0.5 ** math.sqrt(hr)) / (1.0 - 0.5 ** math.sqrt(1.0 / hr))


def e_value_row(
    group: str, rr: float, lo: float, hi: float, control_risk: float | None, design: str
) -> dict[str, Any]:
    """The E-value of one model's intervention ratio, on the scale its estimand allows.

    - ``first-episode hazard``: a hazard ratio; when the outcome is common (control-arm risk of
      a first episode above 15%) it is first converted to the risk-ratio scale (VanderWeele and
      Ding's ``rare = FALSE``), otherwise used as a risk ratio;
    - ``marginal rate``: a ratio of episode rates or means, used as a risk ratio;
    - ``conditional`` (given the episode history or a frailty) and anything else: none, with a
      note: a conditional ratio has no population-level E-value.
    With ``design: randomized`` the note says it is not needed (randomisation balances
    unmeasured confounders); the value is kept for the statistical appendix.
    """
    nan = float("nan")
    out: dict[str, Any] = {"e_value": nan, "e_value_ci": nan, "e_value_scale": "", "note": ""}
    finite = all(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in (rr, lo, hi))
    if group == "first-episode hazard":
        if control_risk is not None and control_risk > COMMON_OUTCOME:
            rr, lo, hi = (hr_to_rr_common(v) if finite else nan for v in (rr, lo, hi))
            out["e_value_scale"] = (
                f"hazard ratio converted to a risk ratio (common outcome: control-arm risk "
                f"{control_risk:.2f} > {COMMON_OUTCOME:g})"
            )
        else:
            out["e_value_scale"] = "hazard ratio as a risk ratio (rare outcome)"
    elif group == "marginal rate":
        out["e_value_scale"] = "rate ratio as a risk ratio"
    else:
        out["note"] = f"not computed: a {group or 'non-ratio'} effect has no E-value"
        return out
    if finite:
        out.update(e_value(rr, lo, hi))
    if design == "randomized":
        out["note"] = "not needed for a randomised comparison (shown for completeness)"
    return out


def forest(
    estimates: pd.DataFrame, config: dict[str, Any], control_risk: float | None = None
) -> pd.DataFrame:
    """One row per ratio model with its intervention estimate (ratio scale), its description
    (title, effect measure, estimand group) and its E-value (see :func:`e_value_row`).
    `control_risk` is the control arm's proportion with at least one episode."""
    from recurstudy.models import described_models

    described = described_models(config)
    rows = estimates[estimates["term"] == intervention_term(config)].copy()
    rows = rows[[bool(described.get(m) and described[m].ratio) for m in rows["model"]]]
    rows["adjusted"] = rows["model"].str.endswith("_adjusted")
    rows["title"] = [described[m].title for m in rows["model"]]
    rows["effect_measure"] = [described[m].effect_measure for m in rows["model"]]
    rows["group"] = [described[m].group for m in rows["model"]]
    design = str(config.get("design") or "randomized")
    ev = [
        e_value_row(
            r.group,
            r.exp_estimate,
            r.exp_conf_low,
            r.exp_conf_high,
            control_risk,
            design,
        )
        if r.converged
        else e_value_row("", np.nan, np.nan, np.nan, None, design)
        for r in rows.itertuples()
    ]
    for key in ("e_value", "e_value_ci", "e_value_scale", "note"):
        rows[key if key != "note" else "e_value_note"] = [e[key] for e in ev]
    cols = [
        "model",
        "title",
        "effect_measure",
        "group",
        "adjusted",
        "estimate",
        "std_error",
        "robust",
        "conf_low",
        "conf_high",
        "exp_estimate",
        "exp_conf_low",
        "exp_conf_high",
        "p_value",
        "e_value",
        "e_value_ci",
        "e_value_scale",
        "e_value_note",
        "converged",
        "message",
    ]
    return rows[cols].reset_index(drop=True)


def control_risk(counts: pd.DataFrame, config: dict[str, Any]) -> float | None:
    """The control arm's proportion of participants with at least one episode."""
    control = counts[counts[ARM].astype(str) == arm_labels(config)[0]]
    return float((control["n_episodes"] > 0).mean()) if len(control) else None


def adjusted_pairs(rows: pd.DataFrame) -> Iterator[tuple[str, pd.Series, pd.Series]]:
    """``(model, its row, the row of <model>_adjusted)`` for each model of `rows` (one row per
    model, a ``model`` column) that has an adjusted variant, in the order of `rows`."""
    f = rows.set_index("model")
    for name in f.index:
        adj = f"{name}_adjusted"
        if name.endswith("_adjusted") or adj not in f.index:
            continue
        yield name, f.loc[name], f.loc[adj]


def crude_vs_adjusted(forest_rows: pd.DataFrame) -> pd.DataFrame:
    """Each model beside its adjusted variant, with the relative change of the ratio."""
    out = []
    for name, c, a in adjusted_pairs(forest_rows):
        out.append(
            {
                "model": name,
                "crude_ratio": c["exp_estimate"],
                "crude_conf_low": c["exp_conf_low"],
                "crude_conf_high": c["exp_conf_high"],
                "adjusted_ratio": a["exp_estimate"],
                "adjusted_conf_low": a["exp_conf_low"],
                "adjusted_conf_high": a["exp_conf_high"],
                "relative_change": a["exp_estimate"] / c["exp_estimate"] - 1.0,
            }
        )
    return pd.DataFrame(
        out,
        columns=[
            "model",
            "crude_ratio",
            "crude_conf_low",
            "crude_conf_high",
            "adjusted_ratio",
            "adjusted_conf_low",
            "adjusted_conf_high",
            "relative_change",
        ],
    )


def _smd(x: np.ndarray, treated: np.ndarray, w: np.ndarray) -> float:
    """Weighted standardised mean difference (pooled unweighted SD in the denominator)."""
    m1 = np.average(x[treated], weights=w[treated])
    m0 = np.average(x[~treated], weights=w[~treated])
    sd = np.sqrt((np.var(x[treated], ddof=1) + np.var(x[~treated], ddof=1)) / 2.0)
    return float((m1 - m0) / sd) if sd > 0 else 0.0


def iptw(counts: pd.DataFrame, config: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Propensity-weighted rate ratio and the covariate balance before/after weighting."""
    from statsmodels.discrete.discrete_model import Logit
    from statsmodels.genmod import families
    from statsmodels.genmod.generalized_linear_model import GLM
    from statsmodels.tools.tools import add_constant

    covs = list(config.get("adjust_for", []))
    term = intervention_term(config)
    df = counts[counts["exposure_days"] > 0].reset_index(drop=True)
    treated = (df[ARM].astype(str) == arm_labels(config)[1]).to_numpy()
    if not covs:
        raise ValueError("IPTW needs covariates under adjust_for")
    Z, names = design(" + ".join(covs), df, intercept=True)
    idx = Z.index
    df, treated = df.loc[idx].reset_index(drop=True), treated[idx]
    ps_fit = Logit(treated.astype(float), Z.to_numpy()).fit(disp=0, maxiter=100)
    ps = ps_fit.predict(Z.to_numpy())
    p_treat = treated.mean()
    w = np.where(treated, p_treat / ps, (1 - p_treat) / (1 - ps))  # stabilised weights
    X = add_constant(treated.astype(float))
    fit = GLM(
        df["n_episodes"].to_numpy(float),
        X,
        family=families.Poisson(),
        offset=np.log(df["exposure_days"].to_numpy(float)),
        var_weights=w,
    ).fit(cov_type="HC0")
    b, se = float(fit.params[1]), float(fit.bse[1])
    z = stats.norm.ppf(0.975)
    lo, hi = b - z * se, b + z * se
    ev = e_value(np.exp(b), np.exp(lo), np.exp(hi))
    result = pd.DataFrame(
        [
            {
                "model": "iptw_poisson",
                "term": term,
                "estimate": b,
                "std_error": se,
                "conf_low": lo,
                "conf_high": hi,
                "exp_estimate": np.exp(b),
                "exp_conf_low": np.exp(lo),
                "exp_conf_high": np.exp(hi),
                "p_value": float(2 * stats.norm.sf(abs(b / se))),
                "n_participants": len(df),
                "weight_min": float(w.min()),
                "weight_max": float(w.max()),
                "e_value": ev["e_value"],
                "e_value_ci": ev["e_value_ci"],
            }
        ]
    )
    ones = np.ones(len(df))
    balance = pd.DataFrame(
        [
            {
                "covariate": n,
                "smd_unweighted": _smd(Z[n].to_numpy(), treated, ones),
                "smd_weighted": _smd(Z[n].to_numpy(), treated, w),
            }
            for n in names
            if n != "Intercept"
        ]
    )
    return result, balance
