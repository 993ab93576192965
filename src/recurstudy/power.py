"""Power by simulation: re-run the study's design under the claimed effect.

The design is read off the data (:func:`design_from_data`): number of participants and allocation,
the distribution of follow-up (its percentiles, so staggered entry and dropout are both kept), the
control arm's episode rate and the negative-binomial dispersion (as the gamma-frailty variance).
Covariates are not simulated: replicates are analysed with the crude formula of the claim's model.
Each replicate simulates a cohort with :mod:`recurstudy.simulate` (the engine behind
``recurstudy simulate``) under the claimed rate ratio, derives its datasets and fits the claim's
model kind with the same code as the real analysis.
Replicates are independent and seeded ``seed + replicate``, so chunks can run as parallel jobs and
any chunking gives the same numbers.

Power is the fraction of replicates whose two-sided Wald test rejects "no effect" at ``alpha`` in
the claimed direction, with its Monte Carlo standard error. The minimum detectable effect at 80%
power is the normal approximation ``(z_{1-alpha/2} + z_{0.8}) * SE``, with SE the median standard
error of the log ratio across replicates (which varies little with the effect size).
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from recurstudy.contract import ARM, arm_labels
from recurstudy.derive import derive_all
from recurstudy.models import fit_spec, get_model, model_specs
from recurstudy.simulate import SimulationParams, simulate_cohort

POWER_METRICS = ("rate_reduction", "hazard_reduction")


def design_from_data(
    participants: pd.DataFrame, counts: pd.DataFrame, config: dict[str, Any]
) -> dict[str, Any]:
    """Simulation parameters that mirror the observed study (covariate effects set to zero)."""
    import statsmodels.api as sm

    control, intervention = arm_labels(config)
    fu = (participants["followup_end"] - participants["enrolled_on"]).dt.days.to_numpy()
    planned = int(fu.max()) if fu.size else 0
    ctrl = counts[(counts[ARM].astype(str) == control) & (counts["exposure_days"] > 0)]
    y = ctrl["n_episodes"].to_numpy(float)
    expo = ctrl["exposure_days"].to_numpy(float)
    rate = float(y.sum() / expo.sum()) if expo.sum() > 0 else float("nan")
    alpha = 0.0
    if len(ctrl) > 5 and y.sum() > 0:
        try:
            fit = sm.NegativeBinomial(y, np.ones((len(y), 1)), exposure=expo).fit(disp=0)
            alpha = float(max(fit.params[-1], 0.0))
        except Exception:  # an NB fit that fails leaves a Poisson design (alpha 0), said below
            alpha = float("nan")
    treated = participants[ARM].astype(str) == intervention
    # Follow-up is drawn from the observed distribution (its percentiles: aggregates only), which
    # reproduces staggered entry as well as dropout.
    sample = np.round(np.percentile(fu, np.arange(101))).astype(int).tolist() if fu.size else []
    return {
        "followup_percentiles": sample,
        "n": int(len(participants)),
        "allocation": float(treated.mean()) if len(participants) else 0.0,
        "followup_days": planned,
        "dropout": float(np.mean(fu < planned)) if fu.size else 0.0,
        "rate_per_day": rate,
        "frailty_var": alpha,
        "arms": [control, intervention],
    }


def _params(
    design: dict[str, Any], rate_ratio: float, seed: int, risk: dict[str, Any] | None = None
) -> SimulationParams:
    """Simulation parameters of one replicate; `risk` (the derive settings) makes the simulated
    intensity apply over the same time at risk as the claim's model uses."""
    frailty = design["frailty_var"]
    risk = risk or {}
    washout = int(risk.get("washout_days", 0) or 0)
    excluded = bool(risk.get("exclude_episode_time")) or washout > 0
    return SimulationParams(
        n=design["n"],
        seed=seed,
        followup_days=design["followup_days"],
        rate_per_day=design["rate_per_day"],
        rate_ratio=rate_ratio,
        frailty_var=frailty if math.isfinite(frailty) else 0.0,
        dropout=design["dropout"],
        beta_age_per_10y=0.0,
        beta_prior_episode=0.0,
        beta_baseline_pain=0.0,
        arms=tuple(design["arms"]),
        allocation=design.get("allocation", 0.5),
        followup_sample=tuple(design["followup_percentiles"])
        if design.get("followup_percentiles")
        else None,
        risk_during_episodes=not excluded,
        washout_days=washout,
    )


def power_inputs(claim: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Everything a claim's power simulation depends on: the claimed value, the claim's model
    (kind and options; analysed with the crude formula, as the simulated cohorts carry no study
    covariates) and the risk-set settings of derive. A change to any of these, and only these,
    re-runs the simulation (it is the power jobs' Snakemake parameter)."""
    from recurstudy.claims import DEFAULT_MODEL

    model = claim.get("model") or DEFAULT_MODEL[claim["metric"]]
    spec = replace({s.name: s for s in model_specs(config)}[model], formula=ARM)
    derive_keys = ("arms", "exclude_episode_time", "washout_days")
    return {
        "claimed": float(claim["claimed"]),
        "spec": asdict(spec),
        "derive": {
            **{k: config[k] for k in derive_keys if k in config},
            "covariates": {},
            "adjust_for": [],
        },
    }


def simulate_replicates(
    claim: dict[str, Any],
    design: dict[str, Any],
    config: dict[str, Any],
    replicates: range,
    seed: int,
) -> pd.DataFrame:
    """Fit the claim's model on each replicate in `replicates` (one row per replicate)."""
    return simulate_from_inputs(power_inputs(claim, config), design, replicates, seed)


def simulate_from_inputs(
    inputs: dict[str, Any], design: dict[str, Any], replicates: range, seed: int
) -> pd.DataFrame:
    """:func:`simulate_replicates` from :func:`power_inputs` (what the workflow's jobs get)."""
    from recurstudy.models import ModelSpec

    spec = ModelSpec(**inputs["spec"])
    config = inputs["derive"]
    claim = {"claimed": inputs["claimed"]}
    rr = 1.0 - float(claim["claimed"])
    rows: list[dict[str, Any]] = []
    n_int = round(design["n"] * design.get("allocation", 0.5))
    if not 0 < n_int < design["n"] or not design["rate_per_day"] > 0:
        # Nothing to simulate: a single-arm study, or no episodes to estimate a rate from.
        return pd.DataFrame(
            rows, columns=["replicate", "seed", "estimate", "std_error", "p_value", "converged"]
        )
    needed = get_model(spec.kind).datasets  # derive only what the model reads
    for r in replicates:
        tables = simulate_cohort(_params(design, rr, seed + r, config))
        data: dict[str, Any] = dict(
            derive_all(tables["participants"], tables["episodes"], config, needed)
        )
        data.update({t: tables[t] for t in needed if t in tables})
        res = fit_spec(spec, data)
        row = res.table[res.table["term"] == spec.intervention_term]
        est = row.iloc[0] if len(row) else None
        rows.append(
            {
                "replicate": r,
                "seed": seed + r,
                "estimate": np.nan if est is None else est["estimate"],
                "std_error": np.nan if est is None else est["std_error"],
                "p_value": np.nan if est is None else est["p_value"],
                "converged": bool(res.converged and est is not None),
            }
        )
    return pd.DataFrame(rows)


def summarize_power(reps: pd.DataFrame, claimed: float, alpha: float = 0.05) -> dict[str, Any]:
    """Power, its Monte Carlo SE and the minimum detectable reduction at 80% power."""
    ok = reps[reps["converged"]]
    n = len(ok)
    if n == 0:
        why = "no replicate could be simulated and fitted (one arm, or no episodes)"
        return {"replicates": int(len(reps)), "converged": 0, "power": None, "note": why}
    direction = np.sign(math.log(1.0 - claimed)) if claimed < 1 else -1.0
    reject = (ok["p_value"] < alpha) & (np.sign(ok["estimate"]) == direction)
    power = float(reject.mean())
    se = ok["std_error"].to_numpy(float)
    med = float(np.median(se))
    # Monte Carlo SE of a median: sqrt(pi/2) * sigma / sqrt(n), sigma from the interquartile
    # range so that a few replicates with huge standard errors do not dominate it.
    q75, q25 = np.percentile(se, [75, 25])
    med_mcse = float(math.sqrt(math.pi / 2) * (q75 - q25) / 1.349 / math.sqrt(n))
    k = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(0.8)
    mde = 1.0 - math.exp(-k * med)
    return {
        "replicates": int(len(reps)),
        "converged": int(n),
        "power": power,
        "power_mc_se": float(math.sqrt(power * (1 - power) / n)),
        "alpha": alpha,
        "median_std_error": med,
        "mde_80": mde,
        "mde_80_mc_se": float(math.exp(-k * med) * k * med_mcse),
        "mean_estimate_ratio": float(np.exp(ok["estimate"].mean())),
    }


def closed_form_poisson_power(
    n_per_arm: int, rate_control: float, rate_ratio: float, days: float, alpha: float = 0.05
) -> float:
    """Power of the Wald test of a Poisson rate ratio with equal, fixed follow-up per person."""
    e0 = n_per_arm * rate_control * days
    e1 = e0 * rate_ratio
    se = math.sqrt(1.0 / e0 + 1.0 / e1)
    z = stats.norm.ppf(1 - alpha / 2)
    mu = abs(math.log(rate_ratio)) / se
    return float(stats.norm.cdf(mu - z) + stats.norm.cdf(-mu - z))


__all__ = [
    "POWER_METRICS",
    "closed_form_poisson_power",
    "design_from_data",
    "power_inputs",
    "simulate_from_inputs",
    "simulate_replicates",
    "summarize_power",
]
