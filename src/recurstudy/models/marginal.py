"""Marginal mean number of episodes by a time tau, compared between arms (Lawless and Nadeau
1995; Cook, Lawless and Nadeau 1996), and the fitted mean functions of the Andersen-Gill model
read as the Lin-Wei-Yang-Ying proportional rates model.

The claim "re-education cut pain episodes by 68% over six months" is about
mu_I(tau) / mu_C(tau), the ratio of the expected numbers of episodes per participant by day tau
in the two arms. It is estimated here without a model for the intensity.

Notation (per arm a; all sums over the counting-process rows of that arm)
---------------------------------------------------------------------------
- Row r of participant i is at risk at t when start_r < t <= stop_r (R's convention);
  Y_i(t) is participant i's rows at risk at t (0 or 1 for non-overlapping rows) and
  Y(t) = sum_i Y_i(t); dN_i(t) is 1 if participant i has an episode at t; d(t) = sum_i dN_i(t).
- Mean function (Nelson-Aalen type, as :func:`recurstudy.models.survival.mean_cumulative_function`
  and R's ``survfit(Surv(start, stop, event) ~ 1)$cumhaz``):
  mu(tau) = sum over event times t <= tau of d(t) / Y(t).  It estimates E N(tau), the expected
  number of episodes by tau, when censoring (drop-out, end of follow-up) is independent of the
  episode process; there is no terminal event (a death would need the Ghosh-Lin estimator).
- Influence of participant i (Lawless and Nadeau 1995):
  U_i(tau) = sum_{t <= tau} [dN_i(t) - Y_i(t) d(t) / Y(t)] / Y(t),
  so that mu(tau) - E N(tau) ~ sum_i U_i(tau), and the robust variance is
  V(tau) = sum_i U_i(tau)^2 (no n / (n - 1) factor): R's ``std.chaz^2`` of
  ``survfit(..., id = participant_id, robust = TRUE)`` and ``mets::recurrentMarginal``'s
  ``se.mu^2`` (untied times). It needs no Poisson assumption: the episodes of one participant
  may be dependent in any way.
  Computed per row on the shared risk sets (:class:`recurstudy.models.risksets.RiskSets`, the
  same as the Cox engine and the MCF use): a row at risk at the event times with indices
  [hl, hs) contributes -(G[hs] - G[hl]) with G the cumulative sum of d / Y^2 (``row_sums``),
  and a row ending in an episode at t <= tau adds 1 / Y(t); the rows' contributions are summed
  per participant (``np.bincount``).  No loop over participants or event times.

Ratio and difference (hand derivation, arms independent)
--------------------------------------------------------
The arms are independent samples of participants, so Cov(mu_I, mu_C) = 0 and
- difference D = mu_I(tau) - mu_C(tau): Var D = V_I + V_C; Wald interval D -/+ z sqrt(Var D);
- log ratio L = log mu_I(tau) - log mu_C(tau): by the delta method
  (d log mu = d mu / mu), Var L = V_I / mu_I^2 + V_C / mu_C^2; the ratio's interval is
  exp(L -/+ z sqrt(Var L)) (log scale, so it stays positive).  Both are equivalently
  sum over all participants of their influence on D or L, squared: participant i of arm a has
  influence U_i on mu_a, hence U_i * (+1 or -1) on D and U_i / mu_a * (+1 or -1) on L.
Not estimable when an arm has no episode by tau (mu = 0: the log ratio is infinite).

Pseudo-score test of equal mean functions over [0, tau] (Cook, Lawless and Nadeau 1996)
-----------------------------------------------------------------------------------------
With z_i = 1 for the intervention arm, Y_I(t) the intervention rows at risk and
zbar(t) = Y_I(t) / Y(t) (pooled risk set), the statistic is the log-rank-type weighted
difference of the two mean-function increments
  U = int_0^tau Y_C Y_I / Y [dmu_I - dmu_C] = sum_{t <= tau} [d_I(t) - d(t) zbar(t)] = O_I - E_I,
the score at beta = 0 of the Poisson (Andersen-Gill, Breslow ties) pseudo-likelihood.  Under
H0: mu_I = mu_C on [0, tau] it is a sum of participant terms
  U_i = sum_{t <= tau} (z_i - zbar(t)) [dN_i(t) - Y_i(t) dmu_0(t)],  dmu_0(t) = d(t) / Y(t)
(the pooled mean function), with sum_i U_i = U exactly.  Robust variance V = sum_i U_i^2 (valid
for any dependence among one participant's episodes); statistic U^2 / V ~ chi-square(1).  This
is the robust score test of the proportional rates model (Lin, Wei, Yang and Ying 2000), R's
``coxph(Surv(start, stop, event) ~ arm + cluster(id), ties = "breslow")$rscore`` on the data
cut at tau.  ``variance_naive`` = sum_t d(t) zbar(t) (1 - zbar(t)) is the Poisson-process
(model-based) variance of U, for comparison only: it is too small when episodes cluster within
participants.

Andersen-Gill as the proportional rates model
----------------------------------------------
The Andersen-Gill partial-likelihood estimate beta with robust errors is the Lin-Wei-Yang-Ying
estimator of the model E dN_i(t) = exp(beta z_i) dmu_0(t) (no Poisson assumption).  Its mean
functions are the Breslow-type mu_0(t) = sum_{s <= t} d(s) / [Y_C(s) + exp(beta) Y_I(s)] and
mu_a(t) = mu_0(t) exp(beta a) (:func:`proportional_rates_mean`; R's
``survfit(fit, newdata, ctype = 1)$cumhaz``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import pandas as pd

from recurstudy.io import factorize
from recurstudy.models.base import (
    ExtraTable,
    Model,
    ModelDescription,
    ModelResult,
    ModelSpec,
    NotEstimable,
    chi2_sf,
    norm_ppf,
    norm_sf,
    option,
    register,
    tidy,
)
from recurstudy.models.risksets import RiskSets

ID = "participant_id"

__all__ = [
    "MarginalMean",
    "MarginalMeanOptions",
    "MeanAtTau",
    "compare_means",
    "fitted_mean_extras",
    "mean_at",
    "planned_followup",
    "proportional_rates_mean",
    "pseudo_score_test",
]


# ------------------------------------------------------------------------------------------------
# Building blocks on arrays
# ------------------------------------------------------------------------------------------------


def _arm_mask(arm: pd.Series, label: str) -> np.ndarray:
    """Rows whose arm is `label` (compared as text; a categorical is compared on its codes)."""
    if isinstance(arm.dtype, pd.CategoricalDtype):
        hit = np.flatnonzero(arm.cat.categories.astype(str) == str(label))
        return np.isin(arm.cat.codes.to_numpy(), hit)
    return arm.astype(str).to_numpy() == str(label)


def _risk_sets(cp: pd.DataFrame) -> tuple[RiskSets, np.ndarray, np.ndarray, np.ndarray]:
    """The shared risk sets of `cp`'s (start, stop] rows (:class:`RiskSets`: event groups at the
    distinct event times, each row at risk for groups hl <= g < hs), the rows at risk per group,
    and the rows' start and stop."""
    start = cp["start"].to_numpy(dtype=float)
    stop = cp["stop"].to_numpy(dtype=float)
    rs = RiskSets(stop, cp["event"].to_numpy() == 1, start)
    return rs, rs.n_at_risk(), start, stop


def _events_by(rs: RiskSets, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """The event rows at or before tau and their event groups."""
    by_tau = rs.group_time[rs.ev_group] <= tau
    return rs.ev_pos[by_tau], rs.ev_group[by_tau]


@dataclass
class MeanAtTau:
    """One arm's mean number of episodes by tau with its participant influence terms.

    ``mean`` estimates E N(tau) (Nelson-Aalen type, risk set start < t <= stop, censoring
    independent of the episodes); ``influence[i]`` is U_i(tau) of the i-th participant in
    ``participants`` (see the module docstring); ``variance`` = sum U_i^2 (Lawless-Nadeau robust,
    R's survfit(id =, robust = TRUE) std.chaz^2); ``n_risk`` the rows at risk at tau;
    ``n_events`` the episodes by tau.
    """

    tau: float
    mean: float
    variance: float
    n_risk: int
    n_events: int
    participants: np.ndarray
    influence: np.ndarray

    @property
    def std_err(self) -> float:
        """Robust standard error of the mean."""
        return float(np.sqrt(self.variance))


def mean_at(cp: pd.DataFrame, tau: float) -> MeanAtTau:
    """The mean cumulative number of episodes by `tau` of the participants in `cp` (one arm's
    counting-process rows: participant_id, start, stop, event) with each participant's influence
    U_i(tau) and the robust variance sum_i U_i(tau)^2 (vectorised; see the module docstring)."""
    codes, ids = factorize(cp[ID])
    rs, n_risk, start, stop = _risk_sets(cp)
    dmu = np.where(rs.group_time <= tau, rs.d / n_risk, 0.0)
    contrib = -rs.row_sums(dmu / n_risk)  # -(sum over the row's event times at risk of d / Y^2)
    rows, groups = _events_by(rs, tau)
    contrib[rows] += 1.0 / n_risk[groups]  # the row's own episode at its stop
    influence = np.bincount(codes, weights=contrib, minlength=ids.size)
    risk_tau = int(np.sum((start < tau) & (tau <= stop)))
    return MeanAtTau(
        tau=float(tau),
        mean=float(dmu.sum()),
        variance=float(influence @ influence),
        n_risk=risk_tau,
        n_events=int(rows.size),
        participants=np.asarray(ids),
        influence=influence,
    )


def planned_followup(cp: pd.DataFrame, arms: tuple[str, str]) -> float:
    """The default tau: the largest time at which both arms still have someone at risk, i.e. the
    smaller of the two arms' last ``stop`` (a row is at risk on (start, stop]).  Past it one arm's
    mean function is not identified.  NaN if an arm has no rows."""
    stop = cp["stop"].to_numpy(dtype=float)
    masks = [_arm_mask(cp["arm"], a) for a in arms]
    return float(min(stop[m].max() if m.any() else np.nan for m in masks))


def pseudo_score_test(cp: pd.DataFrame, tau: float, intervention: str) -> pd.DataFrame:
    """Cook-Lawless-Nadeau pseudo-score test of equal mean functions over [0, tau] (log-rank
    weight; pooled risk set start < t <= stop; robust variance clustered on participant).

    One row: ``score`` U = O_I - E_I (intervention episodes observed minus expected under equal
    mean functions), ``observed``, ``expected``, ``variance`` (robust, sum_i U_i^2 with the
    pooled mean function under H0), ``statistic`` U^2 / variance, ``df`` 1, ``p_value``
    (chi-square), ``variance_naive`` (Poisson-process variance, reference only) and ``tau``.
    """
    codes, ids = factorize(cp[ID])
    z = _arm_mask(cp["arm"], intervention).astype(float)
    rs, n_risk, _, _ = _risk_sets(cp)
    zbar = rs.risk_sums(z) / n_risk
    dmu = np.where(rs.group_time <= tau, rs.d / n_risk, 0.0)
    d = np.where(rs.group_time <= tau, rs.d, 0.0)
    # -(sum over the row's event times at risk of (z - zbar) dmu_0), then its own episode
    contrib = rs.row_sums(zbar * dmu) - z * rs.row_sums(dmu)
    rows, groups = _events_by(rs, tau)
    contrib[rows] += z[rows] - zbar[groups]
    u_i = np.bincount(codes, weights=contrib, minlength=ids.size)
    observed = float(z[rows].sum())
    expected = float(d @ zbar)
    score = observed - expected
    variance = float(u_i @ u_i)
    with np.errstate(divide="ignore", invalid="ignore"):
        statistic = score**2 / variance
    return pd.DataFrame(
        {
            "tau": [float(tau)],
            "score": [score],
            "observed": [observed],
            "expected": [expected],
            "variance": [variance],
            "statistic": [statistic],
            "df": [1],
            "p_value": [float(chi2_sf(statistic, 1))],
            "variance_naive": [float(d @ (zbar * (1.0 - zbar)))],
        }
    )


def compare_means(
    control: MeanAtTau, intervention: MeanAtTau, conf_level: float = 0.95
) -> dict[str, float]:
    """Ratio (log scale, delta method) and difference of two independent arms' means by tau,
    with robust standard errors, `conf_level` Wald intervals and two-sided p-values (see the
    module docstring). The log ratio is NaN (not estimable) when either mean is 0."""
    z = norm_ppf(0.5 + conf_level / 2.0)
    diff = intervention.mean - control.mean
    se_diff = float(np.sqrt(intervention.variance + control.variance))
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = control.mean > 0 and intervention.mean > 0
        log_ratio = np.log(intervention.mean / control.mean) if ok else np.nan
        se_log = (
            float(
                np.sqrt(
                    intervention.variance / intervention.mean**2
                    + control.variance / control.mean**2
                )
            )
            if ok
            else np.nan
        )
        z_diff = diff / se_diff
    return {
        "log_ratio": float(log_ratio),
        "se_log_ratio": se_log,
        "difference": float(diff),
        "se_difference": se_diff,
        "diff_low": float(diff - z * se_diff),
        "diff_high": float(diff + z * se_diff),
        "diff_statistic": float(z_diff),
        "diff_p_value": float(2.0 * norm_sf(abs(z_diff))),
    }


# ------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MarginalMeanOptions:
    """Options of the marginal mean model."""

    tau: int | None = option(
        None,
        minimum=1,
        doc="day at which the mean numbers of episodes are compared; default the planned "
        "follow-up, the last day both arms have someone at risk",
    )


_TAU_DEFAULT = "the planned follow-up (the last day both arms still have someone at risk)"


@register
class MarginalMean(Model):
    """Ratio and difference of the mean numbers of episodes per participant by day tau, with
    robust (Lawless-Nadeau) errors, and the Cook-Lawless-Nadeau pseudo-score test.

    The tidy row (term ``arm[T.<intervention>]``): estimate log mu_I(tau) / mu_C(tau), its
    delta-method robust SE, Wald z and p, the interval on the log scale (exp columns: the ratio
    and its interval); n_events counts the episodes by tau.  tau is the option ``tau`` or the
    planned follow-up, min over arms of the arm's last ``stop``: past it an arm has nobody at
    risk and its mean is not identified, so a larger ``tau`` is a failed fit.  An arm without an
    episode by tau gives a failed row (the ratio is 0 or infinite) with the extras still written.
    """

    kind: ClassVar[str] = "marginal_mean"
    datasets: ClassVar[tuple[str, ...]] = ("counting_process",)
    adjustable: ClassVar[bool] = False
    Options: ClassVar[type] = MarginalMeanOptions
    group: ClassVar[str] = "marginal rate"
    title: ClassVar[str] = "Mean number of episodes by tau (marginal means)"
    effect_measure: ClassVar[str | None] = "ratio of mean numbers of episodes"
    estimand: ClassVar[str] = (
        "ratio of the expected numbers of episodes per participant by day tau ("
        + _TAU_DEFAULT
        + "), intervention vs control, every episode counted; participants censored at the end "
        "of their follow-up (censoring independent of the episodes, no terminal event); "
        "robust errors, no Poisson assumption"
    )
    extras: ClassVar[tuple[ExtraTable, ...]] = (
        ExtraTable(
            "means",
            "Mean number of episodes per participant by day tau, by arm (Nelson-Aalen type; "
            "robust standard error; plain interval floored at 0; rows at risk at tau)",
        ),
        ExtraTable(
            "difference",
            "Difference in mean numbers of episodes by day tau, intervention minus control "
            "(robust standard error, Wald interval)",
        ),
        ExtraTable(
            "pseudo_score",
            "Pseudo-score test of equal mean functions over [0, tau] (Cook, Lawless and "
            "Nadeau; robust variance)",
        ),
    )
    claim_metrics: ClassVar[tuple[str, ...]] = ("rate_reduction",)
    reference: ClassVar[str] = "Lawless and Nadeau (1995); Cook, Lawless and Nadeau (1996)"
    r_call: ClassVar[str] = (
        "survfit(Surv(start, stop, event) ~ arm, id = participant_id, robust = TRUE): cumhaz and "
        "std.chaz at tau per arm; log ratio by the delta method"
    )

    def describe(self, spec: ModelSpec | None = None) -> ModelDescription:
        desc = super().describe(spec)
        tau = None if spec is None else spec.options.get("tau")
        if tau is None:
            return desc
        estimand = desc.estimand.replace(f"day tau ({_TAU_DEFAULT})", f"day {tau}")
        return replace(desc, estimand=estimand)

    def fit(self, spec: ModelSpec, *, counting_process: pd.DataFrame) -> ModelResult:
        cp = counting_process[[ID, "arm", "start", "stop", "event"]]
        control, interv = spec.arms["control"], spec.arms["intervention"]
        in_arm = {a: _arm_mask(cp["arm"], a) for a in (control, interv)}
        counts = {"n_participants": int(cp[ID].nunique()), "n_events": int(cp["event"].sum())}
        missing = [a for a in (control, interv) if not in_arm[a].any()]
        if missing:
            where = " and ".join(missing) + (" arms" if len(missing) > 1 else " arm")
            raise NotEstimable(f"no participants in the {where}", **counts)
        last = planned_followup(cp, (control, interv))
        tau = spec.options.get("tau")
        tau = last if tau is None else float(tau)
        if tau > last:
            raise NotEstimable(
                f"tau = {tau:g} days is past the planned follow-up (day {last:g}, the last day "
                "both arms have someone at risk): a mean number of episodes is not estimable "
                "where an arm has nobody at risk",
                **counts,
            )
        by_arm = {a: mean_at(cp[in_arm[a]], tau) for a in (control, interv)}
        cmp = compare_means(by_arm[control], by_arm[interv], spec.conf_level)
        z = norm_ppf(0.5 + spec.conf_level / 2.0)
        means = pd.DataFrame(
            {
                "arm": [control, interv],
                "tau": tau,
                "mean": [by_arm[a].mean for a in (control, interv)],
                "std_err": [by_arm[a].std_err for a in (control, interv)],
                "n_risk": [by_arm[a].n_risk for a in (control, interv)],
                "n_participants": [len(by_arm[a].participants) for a in (control, interv)],
                "n_events": [by_arm[a].n_events for a in (control, interv)],
            }
        )
        means.insert(4, "conf_low", np.maximum(means["mean"] - z * means["std_err"], 0.0))
        means.insert(5, "conf_high", means["mean"] + z * means["std_err"])
        extras = {
            "means": means,
            "difference": pd.DataFrame(
                {
                    "tau": [tau],
                    "estimate": [cmp["difference"]],
                    "std_err": [cmp["se_difference"]],
                    "conf_low": [cmp["diff_low"]],
                    "conf_high": [cmp["diff_high"]],
                    "statistic": [cmp["diff_statistic"]],
                    "p_value": [cmp["diff_p_value"]],
                }
            ),
            "pseudo_score": pseudo_score_test(cp, tau, interv),
        }
        counts = {
            "n_participants": counts["n_participants"],
            "n_events": by_arm[control].n_events + by_arm[interv].n_events,
        }
        empty = [a for a in (control, interv) if by_arm[a].mean == 0]
        if empty:
            err = NotEstimable(
                f"no episodes by day {tau:g} in the {' and '.join(empty)} "
                f"arm{'s' if len(empty) > 1 else ''}: the ratio of mean "
                "numbers of episodes is not estimable (see the difference table)",
                **counts,
            )
            err.extras = extras
            raise err
        table = tidy(
            spec,
            [spec.intervention_term],
            np.array([cmp["log_ratio"]]),
            np.array([cmp["se_log_ratio"]]),
            robust=True,
            log_likelihood=None,
            message=f"tau = {tau:g} days",
            n_participants=counts["n_participants"],
            n_events=counts["n_events"],
        )
        return ModelResult(table, extras)


# ------------------------------------------------------------------------------------------------
# Andersen-Gill read as the Lin-Wei-Yang-Ying proportional rates model
# ------------------------------------------------------------------------------------------------


def proportional_rates_mean(
    cp: pd.DataFrame, coef: float, *, control: str, intervention: str
) -> pd.DataFrame:
    """Fitted mean functions of the proportional rates model E dN_i(t) = exp(beta z_i) dmu_0(t)
    with z_i = 1 in the intervention arm, at the distinct event times of `cp`.

    mu_0(t) = sum_{s <= t} d(s) / [Y_C(s) + exp(beta) Y_I(s)] (Breslow-type, risk set
    start < s <= stop; R's ``survfit(coxph_fit, newdata, ctype = 1)$cumhaz``) estimates the
    control arm's mean number of episodes by t, and mu_0(t) exp(beta) the intervention arm's, when
    the ratio of the arms' rates is constant over time.  Columns: arm, time, mean."""
    z = _arm_mask(cp["arm"], intervention)
    rs, n_risk, _, _ = _risk_sets(cp)
    y_i = rs.risk_sums(z.astype(float))
    risk = np.exp(coef)
    mu0 = np.cumsum(rs.d / ((n_risk - y_i) + risk * y_i))
    times = rs.group_time
    return pd.DataFrame(
        {
            "arm": np.repeat([control, intervention], times.size),
            "time": np.tile(times, 2),
            "mean": np.concatenate([mu0, mu0 * risk]),
        }
    )


def fitted_mean_extras(
    spec: ModelSpec, cp: pd.DataFrame, result: ModelResult
) -> dict[str, pd.DataFrame]:
    """``{"mean_function": ...}`` for a converged crude Andersen-Gill fit (intervention term
    only; an adjusted fit's mean function depends on a covariate profile and is not given)."""
    table = result.table
    if not result.converged or list(table["term"]) != [spec.intervention_term]:
        return {}
    coef = float(table["estimate"].iloc[0])
    return {
        "mean_function": proportional_rates_mean(
            cp, coef, control=spec.arms["control"], intervention=spec.arms["intervention"]
        )
    }
