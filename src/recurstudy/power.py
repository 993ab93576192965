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
the claimed direction, with its Monte Carlo standard error.

The minimum detectable reduction at 80% power (:func:`mde_from_grid`) is read off a grid of
simulated reductions (``power.mde_grid``, ``power.grid_replicates`` replicates each, seeded
``seed + GRID_SEED_STRIDE * (point + 1) + replicate``, apart from the claim's own seeds): a probit
regression of rejection on the log rate ratio across the grid, solved for 80%, with its Monte
Carlo SE by the delta method from the fit's covariance. When 80% power lies outside the grid the
MDE is not extrapolated: it is missing, with a note. The normal approximation
``(z_{1-alpha/2} + z_{0.8}) * SE`` (SE the replicates' median standard error) is kept as a
cross-check (``mde_80_normal``).

Informative dropout (``power.informative_dropout_link``) re-runs the claim's replicates, same
seeds, with a dropout hazard proportional to ``frailty ** link`` (the follow-up distribution kept,
see :mod:`recurstudy.simulate`): ``power_informative_dropout`` beside the main power.

Pain claims (:func:`simulate_pain_from_inputs`) simulate NRS trajectories from the claim's fitted
pain model (its arm-by-week means and variance components) under the claimed reduction and refit
the model on each replicate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import pandas as pd

from recurstudy.contract import ARM, arm_labels
from recurstudy.derive import derive_all
from recurstudy.lazy import lazy_import
from recurstudy.models import fit_spec, get_model, model_specs
from recurstudy.simulate import SimulationParams, simulate_cohort

stats = lazy_import("scipy.stats")

POWER_METRICS = ("rate_reduction", "hazard_reduction")


def design_from_data(
    participants: pd.DataFrame, counts: pd.DataFrame, config: dict[str, Any]
) -> dict[str, Any]:
    """Simulation parameters that mirror the observed study (covariate effects set to zero)."""
    from statsmodels.discrete.discrete_model import NegativeBinomial

    control, intervention = arm_labels(config)
    cohort = cohort_design(participants, {"control": control, "intervention": intervention})
    ctrl = counts[(counts[ARM].astype(str) == control) & (counts["exposure_days"] > 0)]
    y = ctrl["n_episodes"].to_numpy(float)
    expo = ctrl["exposure_days"].to_numpy(float)
    rate = float(y.sum() / expo.sum()) if expo.sum() > 0 else float("nan")
    alpha = 0.0
    if len(ctrl) > 5 and y.sum() > 0:
        try:
            fit = NegativeBinomial(y, np.ones((len(y), 1)), exposure=expo).fit(disp=0)
            alpha = float(max(fit.params[-1], 0.0))
        except Exception:  # an NB fit that fails leaves a Poisson design (alpha 0), said below
            alpha = float("nan")
    return {**cohort, "rate_per_day": rate, "frailty_var": alpha}


def cohort_design(participants: pd.DataFrame, arms: dict[str, str]) -> dict[str, Any]:
    """Size, allocation and follow-up of the observed study (what pain replicates need too)."""
    fu = (participants["followup_end"] - participants["enrolled_on"]).dt.days.to_numpy()
    planned = int(fu.max()) if fu.size else 0
    treated = participants[ARM].astype(str) == arms["intervention"]
    # Follow-up is drawn from the observed distribution (its percentiles: aggregates only), which
    # reproduces staggered entry as well as dropout.
    sample = np.round(np.percentile(fu, np.arange(101))).astype(int).tolist() if fu.size else []
    return {
        "followup_percentiles": sample,
        "n": int(len(participants)),
        "allocation": float(treated.mean()) if len(participants) else 0.0,
        "followup_days": planned,
        "dropout": float(np.mean(fu < planned)) if fu.size else 0.0,
        "arms": [arms["control"], arms["intervention"]],
    }


GRID_SEED_STRIDE = 10_000_000  # grid point k's seeds start at seed + stride * (k + 1)
TARGET_POWER = 0.8


def grid_seed(seed: int, point: int) -> int:
    """First seed of MDE grid point `point` (distinct from the claim's ``seed + replicate``
    while there are fewer than ``GRID_SEED_STRIDE`` replicates)."""
    return int(seed) + GRID_SEED_STRIDE * (int(point) + 1)


def _params(
    design: dict[str, Any],
    rate_ratio: float,
    seed: int,
    risk: dict[str, Any] | None = None,
    dropout_link: float = 0.0,
) -> SimulationParams:
    """Simulation parameters of one replicate; `risk` (the derive settings) makes the simulated
    intensity apply over the same time at risk as the claim's model uses; `dropout_link` makes
    dropout informative (hazard proportional to frailty ** link)."""
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
        dropout_frailty_link=float(dropout_link),
    )


def power_inputs(claim: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Everything a claim's power simulation depends on: the claimed value, the claim's model
    (kind and options; analysed with the crude formula, as the simulated cohorts carry no study
    covariates) and the risk-set settings of derive. A change to any of these, and only these,
    re-runs the simulation (it is the power jobs' Snakemake parameter)."""
    from recurstudy.claims import DEFAULT_MODEL

    model = claim.get("model") or DEFAULT_MODEL[claim["metric"]]
    spec = replace({s.name: s for s in model_specs(config)}[model], formula=ARM)
    derive_keys = ("arms", "exclude_episode_time", "washout_days", "terminal_events")
    return {
        "claimed": float(claim["claimed"]),
        "spec": asdict(spec),
        "derive": {
            **{k: config[k] for k in derive_keys if k in config},
            "covariates": {},
            "adjust_for": [],
        },
    }


REPLICATE_COLUMNS = [
    "replicate",
    "seed",
    "reduction",
    "estimate",
    "std_error",
    "p_value",
    "converged",
]


def _replicate_row(r: int, seed: int, reduction: float, est: Any, converged: bool) -> dict:
    """One replicate's row: its seed, the simulated reduction and the fitted intervention
    estimate, SE and p-value (missing when the fit gave none)."""
    return {
        "replicate": r,
        "seed": seed + r,
        "reduction": reduction,
        "estimate": np.nan if est is None else est["estimate"],
        "std_error": np.nan if est is None else est["std_error"],
        "p_value": np.nan if est is None else est["p_value"],
        "converged": converged,
    }


def simulate_replicates(
    claim: dict[str, Any],
    design: dict[str, Any],
    config: dict[str, Any],
    replicates: range,
    seed: int,
    reduction: float | None = None,
    dropout_link: float = 0.0,
) -> pd.DataFrame:
    """Fit the claim's model on each replicate in `replicates` (one row per replicate)."""
    return simulate_from_inputs(
        power_inputs(claim, config), design, replicates, seed, reduction, dropout_link
    )


def simulate_from_inputs(
    inputs: dict[str, Any],
    design: dict[str, Any],
    replicates: range,
    seed: int,
    reduction: float | None = None,
    dropout_link: float = 0.0,
) -> pd.DataFrame:
    """:func:`simulate_replicates` from :func:`power_inputs` (what the workflow's jobs get).

    Replicate ``r`` is seeded ``seed + r`` and simulated under a rate ratio of ``1 - reduction``
    (default: the claimed reduction); ``estimate`` is the fitted log ratio of the claim's model.
    """
    from recurstudy.models import ModelSpec

    spec = ModelSpec(**inputs["spec"])
    config = inputs["derive"]
    red = float(inputs["claimed"] if reduction is None else reduction)
    rr = 1.0 - red
    rows: list[dict[str, Any]] = []
    n_int = round(design["n"] * design.get("allocation", 0.5))
    if not 0 < n_int < design["n"] or not design["rate_per_day"] > 0:
        # Nothing to simulate: a single-arm study, or no episodes to estimate a rate from.
        return pd.DataFrame(rows, columns=REPLICATE_COLUMNS)
    needed = get_model(spec.kind).datasets  # derive only what the model reads
    for r in replicates:
        tables = simulate_cohort(_params(design, rr, seed + r, config, dropout_link))
        data: dict[str, Any] = dict(
            derive_all(tables["participants"], tables["episodes"], config, needed)
        )
        data.update({t: tables[t] for t in needed if t in tables})
        res = fit_spec(spec, data)
        row = res.table[res.table["term"] == spec.intervention_term]
        est = row.iloc[0] if len(row) else None
        rows.append(_replicate_row(r, seed, red, est, bool(res.converged and est is not None)))
    return pd.DataFrame(rows, columns=REPLICATE_COLUMNS)


def _nan_to_none(value: Any) -> Any:
    """JSON-safe number: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _rejects(ok: pd.DataFrame, direction: float, alpha: float) -> pd.Series:
    """Two-sided Wald test at `alpha` rejecting no effect in the claimed direction."""
    return (ok["p_value"] < alpha) & (np.sign(ok["estimate"]) == direction)


def normal_approximation_mde(se: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Minimum detectable reduction at 80% power, ``1 - exp(-(z_{1-alpha/2} + z_{0.8}) * SE)``,
    SE the median standard error of the log ratio, and its Monte Carlo SE (of the median: sqrt(
    pi/2) sigma / sqrt(n), sigma from the interquartile range so that a few huge standard errors
    do not dominate it). A cross-check of :func:`mde_from_grid`."""
    se = np.asarray(se, float)
    n = se.size
    med = float(np.median(se))
    q75, q25 = np.percentile(se, [75, 25])
    med_mcse = float(math.sqrt(math.pi / 2) * (q75 - q25) / 1.349 / math.sqrt(n))
    k = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(TARGET_POWER)
    return 1.0 - math.exp(-k * med), float(math.exp(-k * med) * k * med_mcse)


def grid_power(grid: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Rejections per grid reduction: replicates, converged, rejecting (no effect rejected at
    `alpha` in the direction of a reduction), power and its Monte Carlo SE."""
    rows = []
    for red, g in grid.groupby("reduction", sort=True):
        ok = g[g["converged"].astype(bool)]
        k = int(_rejects(ok, -1.0, alpha).sum())
        n = int(len(ok))
        p = k / n if n else float("nan")
        rows.append(
            {
                "reduction": float(red),
                "replicates": int(len(g)),
                "converged": n,
                "rejecting": k,
                "power": p,
                "power_mc_se": math.sqrt(p * (1 - p) / n) if n else float("nan"),
            }
        )
    return pd.DataFrame(
        rows,
        columns=["reduction", "replicates", "converged", "rejecting", "power", "power_mc_se"],
    )


def _probit_fit(x: np.ndarray, k: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Binomial probit MLE of P(reject) = Phi(a + b x) on grouped counts by Fisher scoring:
    (a, b) and their covariance (inverse Fisher information). Raises ValueError when the MLE
    does not exist (complete separation: rejection jumps from 0 to 1) or scoring diverges."""
    X = np.column_stack([np.ones_like(x), x])
    theta = np.zeros(2)
    for _ in range(100):
        eta = X @ theta
        phi = stats.norm.pdf(eta)
        cdf = np.clip(stats.norm.cdf(eta), 1e-15, 1 - 1e-15)
        w = n * phi**2 / (cdf * (1 - cdf))
        info = X.T @ (w[:, None] * X)
        score = X.T @ (phi * (k - n * cdf) / (cdf * (1 - cdf)))
        try:
            step = np.linalg.solve(info, score)
        except np.linalg.LinAlgError as exc:
            raise ValueError("the probit fit has a singular information matrix") from exc
        theta = theta + step
        if not np.all(np.isfinite(theta)) or abs(theta[1]) > 1e3:
            break
        if np.max(np.abs(step)) < 1e-10:
            return theta, np.linalg.inv(info)
    raise ValueError("the probit fit does not converge (rejection jumps from 0 to 1)")


def mde_from_grid(grid: pd.DataFrame, alpha: float = 0.05) -> dict[str, Any]:
    """Minimum detectable reduction at 80% power from replicates simulated over a grid of
    reductions (:func:`simulate_from_inputs` with ``reduction=``): a binomial probit regression
    of rejection on x = log(1 - reduction) (for a Wald test P(reject) ~ Phi(-x / SE - z), so
    probit in x is the right family), solved for Phi(a + b x) = 0.8; its Monte Carlo SE by the
    delta method from the fit's covariance. When 80% lies outside the grid, or the fit fails,
    the MDE is missing (None) and ``mde_80_note`` says why: nothing is extrapolated."""
    table = grid_power(grid, alpha)
    table = table[table["converged"] > 0]
    out: dict[str, Any] = {
        "mde_80": None,
        "mde_80_mc_se": None,
        "mde_80_method": (
            f"probit fit of rejection on log rate ratio over {len(table)} simulated reductions"
        ),
        "mde_80_note": "",
        "mde_grid": [
            {
                k: int(v) if k in ("replicates", "converged", "rejecting") else _nan_to_none(v)
                for k, v in r.items()
            }
            for r in table.to_dict("records")
        ],
    }
    if len(table) < 2:
        out["mde_80_note"] = "fewer than two grid points with converged replicates"
        return out
    x = np.log1p(-table["reduction"].to_numpy(float))
    k = table["rejecting"].to_numpy(float)
    n = table["converged"].to_numpy(float)
    lo, hi = float(table["reduction"].min()), float(table["reduction"].max())
    share = k / n
    if np.all(share >= TARGET_POWER) or np.all(share <= TARGET_POWER):
        # the simulated power does not cross 80% inside the grid
        side = "below the smallest" if np.all(share >= TARGET_POWER) else "above the largest"
        out["mde_80_note"] = (
            f"80% power lies {side} simulated reduction (grid {lo:g} to {hi:g}, simulated power "
            f"{share.min():.2f} to {share.max():.2f}): not extrapolated; widen power.mde_grid"
        )
        return out
    try:
        (a, b), cov = _probit_fit(x, k, n)
    except (ValueError, np.linalg.LinAlgError) as exc:
        out["mde_80_note"] = f"no MDE from the grid: {exc}"
        return out
    out["probit_intercept"], out["probit_slope"] = float(a), float(b)
    if not b < 0:
        out["mde_80_note"] = "power does not rise with the simulated reduction across the grid"
        return out
    zt = stats.norm.ppf(TARGET_POWER)
    x80 = (zt - a) / b
    mde = float(-math.expm1(x80))
    if not lo <= mde <= hi:
        side = "below the smallest" if mde < lo else "above the largest"
        out["mde_80_note"] = (
            f"80% power lies {side} simulated reduction (grid {lo:g} to {hi:g}): "
            "not extrapolated; widen power.mde_grid"
        )
        return out
    grad = np.array([-1.0 / b, -(zt - a) / b**2])  # d x80 / d (a, b)
    se_x = float(math.sqrt(grad @ cov @ grad))
    out["mde_80"] = mde
    out["mde_80_mc_se"] = float(math.exp(x80) * se_x)  # d(1 - e^x)/dx = -e^x
    return out


def summarize_power(
    reps: pd.DataFrame,
    claimed: float,
    alpha: float = 0.05,
    grid: pd.DataFrame | None = None,
    informative: pd.DataFrame | None = None,
    informative_link: float | None = None,
) -> dict[str, Any]:
    """Power under the claim and its Monte Carlo SE; the minimum detectable reduction at 80%
    power from the `grid` replicates (:func:`mde_from_grid`) beside the normal approximation
    (``mde_80_normal``); power under informative dropout from the `informative` replicates
    (the claim's seeds, dropout hazard proportional to frailty ** `informative_link`)."""
    ok = reps[reps["converged"].astype(bool)]
    n = len(ok)
    if n == 0:
        why = "no replicate could be simulated and fitted (one arm, or no episodes)"
        return {"replicates": int(len(reps)), "converged": 0, "power": None, "note": why}
    direction = np.sign(math.log(1.0 - claimed)) if claimed < 1 else -1.0
    power = float(_rejects(ok, direction, alpha).mean())
    se = ok["std_error"].to_numpy(float)
    mde_normal, mde_normal_se = normal_approximation_mde(se, alpha)
    out: dict[str, Any] = {
        "replicates": int(len(reps)),
        "converged": int(n),
        "power": power,
        "power_mc_se": float(math.sqrt(power * (1 - power) / n)),
        "alpha": alpha,
        "median_std_error": float(np.median(se)),
        "mde_80_normal": mde_normal,
        "mde_80_normal_mc_se": mde_normal_se,
        "mean_estimate_ratio": float(np.exp(ok["estimate"].mean())),
    }
    if grid is not None:
        out.update(mde_from_grid(grid, alpha))
    else:
        out.update({"mde_80": None, "mde_80_mc_se": None, "mde_80_note": "no grid simulated"})
    if informative is not None:
        oki = informative[informative["converged"].astype(bool)]
        m = len(oki)
        p_inf = float(_rejects(oki, direction, alpha).mean()) if m else float("nan")
        out.update(
            {
                "informative_dropout_link": informative_link,
                "power_informative_dropout": _nan_to_none(p_inf),
                "power_informative_dropout_mc_se": _nan_to_none(
                    math.sqrt(p_inf * (1 - p_inf) / m) if m else float("nan")
                ),
                "mean_estimate_ratio_informative_dropout": _nan_to_none(
                    float(np.exp(oki["estimate"].mean())) if m else float("nan")
                ),
            }
        )
    return out


# ------------------------------------------------------------------------------ pain claims

PAIN_METRICS = ("pain_reduction",)
PAIN_COLUMNS = [
    "replicate",
    "seed",
    "reduction",
    "estimate",
    "std_error",
    "p_value",
    "converged",
]


def pain_power_inputs(claim: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """What a pain claim's power simulation depends on: the claimed reduction, its week, its
    contrast (``within_arm`` unless the claim says otherwise) and the claim's pain model spec
    (crude formula). The jobs' Snakemake parameter, with the fitted model's extras as input."""
    from recurstudy.claims import DEFAULT_MODEL

    model = claim.get("model") or DEFAULT_MODEL[claim["metric"]]
    spec = replace({s.name: s for s in model_specs(config)}[model], formula=ARM)
    return {
        "claimed": float(claim["claimed"]),
        "week": int(claim.get("week", 6)),
        "contrast": str(claim.get("contrast") or "within_arm"),
        "spec": asdict(spec),
    }


def pain_design_from_fit(
    percent_change: pd.DataFrame, variance_components: pd.DataFrame, arms: dict[str, str]
) -> dict[str, Any]:
    """The pain model's fitted arm-by-week mean NRS (``percent_change`` rows ``row == "arm"``)
    and variance components (random intercept and slope covariance ``G`` on lme4's
    ``weeks_scaled`` = weeks / slope_scale, residual variance ``sigma2``)."""
    pc = percent_change[percent_change["row"] == "arm"]
    weeks = sorted(int(w) for w in pc["week"].unique())

    def means(label: str) -> list[float]:
        sub = pc[pc["arm"].astype(str) == label].set_index("week")["mean_nrs"]
        return [float(sub.loc[w]) for w in weeks]

    vc = variance_components.set_index("term")["variance"]
    g = [
        [float(vc["(Intercept)"]), float(vc["(Intercept):weeks_scaled"])],
        [float(vc["(Intercept):weeks_scaled"]), float(vc["weeks_scaled"])],
    ]
    return {
        "weeks": weeks,
        "mean_control": means(arms["control"]),
        "mean_intervention": means(arms["intervention"]),
        "G": g,
        "sigma2": float(vc["sigma2"]),
        "slope_scale": float(variance_components["slope_scale_weeks"].iloc[0]),
    }


def pain_means_under_claim(
    pain: dict[str, Any], claimed: float, week: int, contrast: str
) -> tuple[np.ndarray, np.ndarray]:
    """Mean NRS per visit week (control, intervention) under the claimed reduction.

    Both arms share the pooled fitted baseline (first week; randomised). ``between_arm``: the
    intervention mean at every later week is ``(1 - claimed)`` times the fitted control mean
    there (the claimed ratio holds at all post-baseline visits, not only the claim's week).
    ``within_arm``: the fitted intervention trajectory after baseline is scaled by one factor so
    that its mean at the claim week is ``(1 - claimed)`` times the baseline mean. The control arm
    keeps its fitted means."""
    weeks = np.asarray(pain["weeks"])
    ctrl = np.asarray(pain["mean_control"], float).copy()
    intv = np.asarray(pain["mean_intervention"], float).copy()
    base = 0.5 * (ctrl[0] + intv[0])
    ctrl[0] = intv[0] = base
    if week not in set(weeks.tolist()) or week == weeks[0]:
        raise ValueError(f"claim week {week} is not a post-baseline visit week {weeks.tolist()}")
    later = weeks > weeks[0]
    if contrast == "between_arm":
        intv[later] = (1.0 - claimed) * ctrl[later]
    elif contrast == "within_arm":
        at = int(np.nonzero(weeks == week)[0][0])
        intv[later] = intv[later] * ((1.0 - claimed) * base / intv[at])
    else:
        raise ValueError(f"unknown pain contrast {contrast!r}")
    return ctrl, intv


def _pain_estimate(res: Any, spec: Any, week: int, contrast: str) -> dict[str, Any] | None:
    """The claim's estimate from one refit: reduction, SE on the working scale, p-value."""
    if contrast == "between_arm":
        ba = res.extras.get("between_arm")
        if ba is None:
            return None
        row = ba[(ba["method"] == "cLDA") & (ba["week"] == week)]
        if row.empty or not bool(row.iloc[0]["converged"]):
            return None
        r = row.iloc[0]
        return {
            "estimate": float(r["reduction"]),
            "std_error": float(r["se_log_ratio"]),
            "p_value": float(r["p_value"]),
        }
    pc = res.extras.get("percent_change")
    if pc is None:
        return None
    row = pc[
        (pc["row"] == "arm")
        & (pc["arm"].astype(str) == spec.arms["intervention"])
        & (pc["week"] == week)
    ]
    if row.empty:
        return None
    r = row.iloc[0]
    return {
        "estimate": -float(r["percent_change"]) / 100.0,
        "std_error": float(r["se_percent_change"]) / 100.0,
        "p_value": float(r["p_value"]),
    }


def simulate_pain_cohort(
    design: dict[str, Any],
    pain: dict[str, Any],
    mean_control: np.ndarray,
    mean_intervention: np.ndarray,
    arms: dict[str, str],
    seed: int,
) -> dict[str, pd.DataFrame]:
    """One cohort of NRS trajectories from the fitted pain model: participants randomised as in
    the design, follow-up drawn from its percentiles (a visit is seen when its day lies within
    follow-up), ``nrs = mean(arm, week) + b0 + b1 * weeks / slope_scale + e`` with ``(b0, b1) ~
    N(0, G)`` and ``e ~ N(0, sigma2)``, unrounded (the model's own Gaussian scale)."""
    rng = np.random.default_rng(seed)
    n = int(design["n"])
    n_int = round(n * design.get("allocation", 0.5))
    arm = rng.permutation((np.arange(n) < n_int).astype(int))
    sample = design.get("followup_percentiles") or [design["followup_days"]]
    fu = rng.choice(np.asarray(sample, dtype=int), n)
    g = np.asarray(pain["G"], float)
    w, v = np.linalg.eigh(g)
    root = v * np.sqrt(np.clip(w, 0.0, None))  # G = root root' (G may be near singular)
    b = rng.standard_normal((n, 2)) @ root.T
    weeks = np.asarray(pain["weeks"], dtype=int)
    t = weeks / float(pain["slope_scale"])
    mu = np.where(arm[:, None] == 1, mean_intervention[None, :], mean_control[None, :])
    e = rng.normal(0.0, math.sqrt(pain["sigma2"]), (n, weeks.size))
    y = mu + b[:, :1] + b[:, 1:] * t[None, :] + e
    seen = weeks[None, :] * 7 <= fu[:, None]
    pi, vi = np.nonzero(seen)
    ids = np.char.add("P", np.char.zfill(np.arange(1, n + 1).astype(str), 6))
    start = pd.Timestamp("2025-01-06")
    participants = pd.DataFrame(
        {
            "participant_id": ids,
            ARM: np.asarray([arms["control"], arms["intervention"]])[arm],
            "enrolled_on": start,
            "followup_end": start + pd.to_timedelta(fu, unit="D"),
        }
    )
    scores = pd.DataFrame(
        {
            "participant_id": ids[pi],
            "assessed_on": start + pd.to_timedelta(weeks[vi] * 7, unit="D"),
            "nrs": y[pi, vi],
        }
    )
    return {"participants": participants, "pain_scores": scores}


def simulate_pain_from_inputs(
    inputs: dict[str, Any],
    design: dict[str, Any],
    pain: dict[str, Any],
    replicates: range,
    seed: int,
) -> pd.DataFrame:
    """Refit the claim's pain model on replicates simulated under the claimed reduction (see
    :func:`pain_means_under_claim`, :func:`simulate_pain_cohort`); replicate ``r`` is seeded
    ``seed + r``. ``estimate`` is the claim's reduction (``1 - ratio`` between arms, or the
    intervention arm's reduction from baseline within arm), ``p_value`` its test of no effect."""
    from recurstudy.models import ModelSpec

    spec = ModelSpec(**inputs["spec"])
    claimed, week, contrast = inputs["claimed"], inputs["week"], inputs["contrast"]
    ctrl, intv = pain_means_under_claim(pain, claimed, week, contrast)
    rows = []
    for r in replicates:
        tables = simulate_pain_cohort(design, pain, ctrl, intv, spec.arms, seed + r)
        res = fit_spec(spec, tables)
        est = _pain_estimate(res, spec, week, contrast) if res.converged else None
        rows.append(_replicate_row(r, seed, claimed, est, est is not None))
    return pd.DataFrame(rows, columns=PAIN_COLUMNS)


def summarize_pain_power(reps: pd.DataFrame, claimed: float, alpha: float = 0.05) -> dict[str, Any]:
    """Power of a pain claim: the share of replicates rejecting no effect at `alpha` with a
    reduction, its Monte Carlo SE, and the mean estimated reduction (with its MC SE) against the
    claimed value it was simulated under. No MDE grid: rate and hazard claims only."""
    ok = reps[reps["converged"].astype(bool)]
    n = len(ok)
    if n == 0:
        why = "no pain replicate could be simulated and fitted"
        return {"replicates": int(len(reps)), "converged": 0, "power": None, "note": why}
    reject = (ok["p_value"] < alpha) & (ok["estimate"] > 0)
    power = float(reject.mean())
    est = ok["estimate"].to_numpy(float)
    return {
        "replicates": int(len(reps)),
        "converged": int(n),
        "power": power,
        "power_mc_se": float(math.sqrt(power * (1 - power) / n)),
        "alpha": alpha,
        "claimed": claimed,
        "mean_estimate": float(est.mean()),
        "mean_estimate_mc_se": float(est.std(ddof=1) / math.sqrt(n)) if n > 1 else None,
        "mde_80": None,
        "mde_80_mc_se": None,
        "note": "pain claim: power from refits of the pain model; no MDE grid",
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


def closed_form_poisson_mde(
    n_per_arm: int, rate_control: float, days: float, alpha: float = 0.05, power: float = 0.8
) -> float:
    """The smallest reduction at which :func:`closed_form_poisson_power` reaches `power`."""
    from scipy import optimize

    def gap(red: float) -> float:
        return closed_form_poisson_power(n_per_arm, rate_control, 1 - red, days, alpha) - power

    reds = np.linspace(1e-4, 0.999, 1000)
    above = np.nonzero([gap(r) >= 0 for r in reds])[0]
    if above.size == 0 or above[0] == 0:
        return float("nan")
    i = int(above[0])
    return float(optimize.brentq(gap, reds[i - 1], reds[i], xtol=1e-12))


__all__ = [
    "GRID_SEED_STRIDE",
    "PAIN_METRICS",
    "POWER_METRICS",
    "closed_form_poisson_mde",
    "closed_form_poisson_power",
    "cohort_design",
    "design_from_data",
    "grid_power",
    "grid_seed",
    "mde_from_grid",
    "normal_approximation_mde",
    "pain_design_from_fit",
    "pain_means_under_claim",
    "pain_power_inputs",
    "power_inputs",
    "simulate_from_inputs",
    "simulate_pain_cohort",
    "simulate_pain_from_inputs",
    "summarize_pain_power",
    "simulate_replicates",
    "summarize_power",
]
