"""Survival models: Kaplan-Meier with the log-rank test, Cox on time to first episode, and the
recurrent-event Cox models (Andersen-Gill, Prentice-Williams-Peterson).

Kaplan-Meier and the log-rank test come from lifelines. The Cox fits use recurstudy's own
counting-process engine (:mod:`recurstudy.models.coxph_engine`), which reproduces R's ``coxph``
(Efron ties, robust variance from dfbeta residuals summed per participant); lifelines and
statsmodels get the robust variance of (start, stop] data wrong or are too slow (see that module).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

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
    design,
    norm_ppf,
    option,
    register,
    tidy,
)
from recurstudy.models.coxph_engine import coxph_fit
from recurstudy.models.monotone import raise_if_monotone
from recurstudy.models.risksets import RiskSets

ID = "participant_id"


def _arm_check(spec: ModelSpec, df: pd.DataFrame) -> str:
    """A message if the data cannot estimate an arm effect, else ''."""
    present = {str(a) for a in df["arm"].dropna().unique()}  # distinct values first: cheap
    if len(present) < 2:
        return f"only one arm in the data ({', '.join(sorted(present)) or 'none'})"
    return ""


def _fit_cox(
    spec: ModelSpec,
    df: pd.DataFrame,
    *,
    stop: str,
    start: str | None,
    strata: str | None,
    cluster: bool,
) -> ModelResult:
    # Participant ids are text: hashed once here (codes in first-seen order; the robust variance
    # does not depend on the order of the clusters), not once per count and again in the engine.
    ids, uniq = factorize(df[ID])
    n_events = int(df["event"].sum())
    counts = {"n_participants": int(len(uniq)), "n_events": n_events}
    msg = _arm_check(spec, df)
    if msg:
        raise NotEstimable(msg, **counts)
    X, names = design(spec.formula, df, intercept=False)
    complete = len(X) == len(df)  # no row dropped for a missing covariate: no copy of df
    rows = df if complete else df.loc[X.index]
    if not complete:
        ids = ids[df.index.get_indexer(X.index)]
    ties = spec.options.get("ties", "efron")
    t = rows[stop].to_numpy(dtype=float)
    ev = rows["event"].to_numpy()
    st = None if start is None else rows[start].to_numpy(dtype=float)
    sv = None if strata is None else rows[strata].to_numpy()
    fit = coxph_fit(
        X.to_numpy(),
        t,
        ev,
        start=st,
        strata=sv,
        cluster=ids if cluster else None,
        ties=ties,
        names=names,
    )
    n_used = len(np.unique(ids[ids >= 0])) if not complete else len(uniq)
    counts = {"n_participants": int(n_used), "n_events": int(ev.sum())}
    # A coefficient running off to infinity (no episodes in one arm...): the failed row, never
    # a "converged" ratio of 1e-9 (recurstudy.models.monotone; R's coxph warns).
    if fit.monotone.any():
        raise_if_monotone(spec, names, fit.infinite, fit.no_event_level, counts, X.to_numpy())
    var = fit.robust_var if cluster else fit.var
    assert var is not None  # the engine sets robust_var whenever a cluster is given
    se = np.sqrt(np.diag(var))
    dropped = len(df) - len(rows)
    message = fit.message
    if dropped:
        message = "; ".join(filter(None, [message, f"{dropped} rows with missing covariates"]))
    table = tidy(
        spec,
        names,
        fit.coef,
        se,
        robust=cluster,
        log_likelihood=fit.loglik[1],
        converged=fit.converged,
        message=message,
        **counts,
    )
    naive_se = np.sqrt(np.diag(fit.var))
    extras = {
        "naive": pd.DataFrame({"term": names, "estimate": fit.coef, "std_error": naive_se}),
        "tests": pd.DataFrame(
            {
                "test": ["likelihood_ratio", "wald", "score"],
                "statistic": [
                    2.0 * (fit.loglik[1] - fit.loglik[0]),
                    fit.wald_test,
                    fit.score_test,
                ],
                "df": len(names),
            }
        ).assign(p_value=lambda d: chi2_sf(d["statistic"], d["df"])),
        "fit": pd.DataFrame(
            {
                "quantity": ["loglik_null", "loglik", "iterations", "n_rows", "ties"],
                "value": [fit.loglik[0], fit.loglik[1], fit.iterations, fit.n, ties],
            }
        ),
    }
    if fit.converged:
        extras["ph_test"] = ph_test(
            spec,
            rows,
            stop=stop,
            start=start,
            strata=strata,
            coef=fit.coef,
            design_matrix=X,
            risksets=fit.risksets,
        )
    return ModelResult(table, extras, converged=fit.converged, message=message)


@dataclass(frozen=True)
class CoxOptions:
    """Options of the Cox-type models."""

    ties: Literal["efron", "breslow"] = option("efron", doc="tie handling, as coxph(ties =)")


_COX_EXTRAS = (
    ExtraTable("ph_test", "Proportional hazards test (scaled Schoenfeld residuals, cox.zph)"),
    ExtraTable("tests", "Likelihood-ratio, Wald and score tests", "appendix"),
    ExtraTable("naive", "Model-based (naive) standard errors", "appendix"),
    ExtraTable("fit", "Fit: log-likelihoods, iterations, rows, ties", "hidden"),
)


@register
class CoxFirstEpisode(Model):
    """Cox proportional hazards on time to first episode (Efron ties, model-based errors)."""

    kind: ClassVar[str] = "cox"
    datasets: ClassVar[tuple[str, ...]] = ("first_episode",)
    Options: ClassVar[type] = CoxOptions
    group: ClassVar[str] = "first-episode hazard"
    title: ClassVar[str] = "Cox model, time to first episode"
    effect_measure: ClassVar[str | None] = "hazard ratio"
    estimand: ClassVar[str] = (
        "ratio of the hazards of a first episode, intervention vs control, among participants "
        "still free of episodes since enrolment (later episodes ignored); model-based errors"
    )
    extras: ClassVar[tuple[ExtraTable, ...]] = _COX_EXTRAS
    claim_metrics: ClassVar[tuple[str, ...]] = ("hazard_reduction",)
    reference: ClassVar[str] = "Cox (1972)"
    r_call: ClassVar[str] = "coxph(Surv(time, event) ~ arm, ties = 'efron')"

    def fit(self, spec: ModelSpec, *, first_episode: pd.DataFrame) -> ModelResult:
        fe, note = _delayed_entry(first_episode)
        if note is None:
            return _fit_cox(spec, fe, stop="time", start=None, strata=None, cluster=False)
        # Delayed entry (an episode under way at enrolment): R's Surv(entry, time, event).
        res = _fit_cox(spec, fe, stop="time", start="entry", strata=None, cluster=False)
        return _noted(res, note)


def _delayed_entry(fe: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """The first-episode rows with time at risk and a note, when some participant enters late
    (``entry > 0``); otherwise `fe` unchanged and None (right-censored data, as before).

    Rows with ``time <= entry`` (never at risk: follow-up ended inside an episode under way at
    enrolment or its washout) are left out, as R leaves out ``Surv(entry, time)`` with
    ``time <= entry``.
    """
    if "entry" not in fe.columns or not (fe["entry"] > 0).any():
        return fe, None
    at_risk = fe["time"].to_numpy() > fe["entry"].to_numpy()
    never = int((~at_risk).sum())
    note = f"{never} participants never at risk left out" if never else ""
    return fe.loc[at_risk], note


def _noted(res: ModelResult, note: str) -> ModelResult:
    """`res` with `note` added to its message (tidy table and result)."""
    if not note:
        return res
    message = "; ".join(filter(None, [res.message, note]))
    res.table["message"] = message
    res.message = message
    return res


@register
class AndersenGill(Model):
    """Andersen-Gill: counting-process Cox on all episodes, robust errors by participant."""

    kind: ClassVar[str] = "andersen_gill"
    datasets: ClassVar[tuple[str, ...]] = ("counting_process",)
    Options: ClassVar[type] = CoxOptions
    group: ClassVar[str] = "marginal rate"
    title: ClassVar[str] = "Andersen-Gill (all episodes)"
    effect_measure: ClassVar[str | None] = "hazard ratio"
    estimand: ClassVar[str] = (
        "ratio of the episode rates (intensities), intervention vs control, every episode "
        "counted while at risk; with robust errors clustered on participant it estimates the "
        "ratio of mean rates of the Lin-Wei-Yang-Ying proportional rates model"
    )
    extras: ClassVar[tuple[ExtraTable, ...]] = (
        *_COX_EXTRAS,
        ExtraTable("mean_function", "Fitted mean number of episodes by arm (LWYY)", "hidden"),
    )
    claim_metrics: ClassVar[tuple[str, ...]] = ("hazard_reduction", "rate_reduction")
    reference: ClassVar[str] = "Andersen and Gill (1982); Lin, Wei, Yang and Ying (2000)"
    r_call: ClassVar[str] = "coxph(Surv(start, stop, event) ~ arm, cluster = participant_id)"

    def fit(self, spec: ModelSpec, *, counting_process: pd.DataFrame) -> ModelResult:
        from recurstudy.models.marginal import fitted_mean_extras

        cp = counting_process
        res = _fit_cox(spec, cp, stop="stop", start="start", strata=None, cluster=True)
        res.extras.update(fitted_mean_extras(spec, cp, res))  # LWYY mean function
        return res


@dataclass(frozen=True)
class PWPOptions(CoxOptions):
    """Options of the Prentice-Williams-Peterson models."""

    timescale: Literal["total", "gap"] = option(
        "total", doc="total: (start, stop] since enrolment; gap: time since the previous episode"
    )
    max_stratum: int | None = option(
        None, minimum=1, doc="pool episode numbers above this into one stratum"
    )


@register
class PWP(Model):
    """Prentice-Williams-Peterson: stratified by episode number, robust errors.

    Options: ``timescale`` ``total`` ((start, stop] since enrolment) or ``gap`` (time since the
    previous episode); ``max_stratum`` pools episode numbers above it into one stratum.
    """

    kind: ClassVar[str] = "pwp"
    datasets: ClassVar[tuple[str, ...]] = ("counting_process",)
    Options: ClassVar[type] = PWPOptions
    effect_measure: ClassVar[str | None] = "hazard ratio"
    group: ClassVar[str] = "conditional"
    extras: ClassVar[tuple[ExtraTable, ...]] = _COX_EXTRAS
    claim_metrics: ClassVar[tuple[str, ...]] = ("hazard_reduction",)
    reference: ClassVar[str] = "Prentice, Williams and Peterson (1981)"

    def describe(self, spec: ModelSpec | None = None) -> ModelDescription:
        gap = spec is not None and spec.options.get("timescale") == "gap"
        clock = "time since the previous episode" if gap else "time since enrolment"
        surv = "Surv(gap, event)" if gap else "Surv(start, stop, event)"
        return ModelDescription(
            kind=self.kind,
            title=f"Prentice-Williams-Peterson, {'gap' if gap else 'total'} time",
            effect_measure=self.effect_measure,
            estimand=(
                "ratio of the hazards of the k-th episode, intervention vs control, among "
                "participants who have had k - 1 episodes (strata by episode number), on the "
                f"clock of {clock}; conditional on the episode history; robust errors"
            ),
            extras=self.extras,
            claim_metrics=self.claim_metrics,
            group=self.group,
            reference=self.reference,
            r_call=f"coxph({surv} ~ arm + strata(episode), cluster = participant_id)",
        )

    def fit(self, spec: ModelSpec, *, counting_process: pd.DataFrame) -> ModelResult:
        df = counting_process.copy()
        cap = spec.options.get("max_stratum")
        if cap:
            df["episode"] = np.minimum(df["episode"], int(cap))
        timescale = spec.options.get("timescale", "total")
        if timescale == "total":
            return _fit_cox(spec, df, stop="stop", start="start", strata="episode", cluster=True)
        return _fit_cox(spec, df, stop="gap", start=None, strata="episode", cluster=True)


def ph_test(
    spec: ModelSpec,
    df: pd.DataFrame,
    *,
    stop: str = "time",
    start: str | None = None,
    strata: str | None = None,
    coef: np.ndarray | None = None,
    design_matrix: pd.DataFrame | None = None,
    risksets: RiskSets | None = None,
) -> pd.DataFrame:
    """Proportional-hazards test as R survival 3.x ``cox.zph(fit)`` (transform "km", terms).

    The score-test form of survival >= 3.0 (:mod:`recurstudy.models.coxzph`), on the Cox fit of
    the spec's formula; one row per formula term (a factor with several columns gets one test with
    as many df, named by the term; a one-column term keeps its column name, as in the tidy
    table) and a final GLOBAL row.  ``start`` / ``strata`` give the (start, stop] and stratified
    variants (R's cox.zph on Andersen-Gill and PWP fits). ``coef``: the coefficients of that
    fit when the caller already has them (the fit is not repeated); ``design_matrix``: its
    design (:func:`~recurstudy.models.base.design` of ``df``, rows aligned), and ``risksets``
    its unstratified risk sets (``CoxFit.risksets``), likewise.
    """
    from recurstudy.models.coxzph import cox_zph

    if design_matrix is None:
        X, names = design(spec.formula, df, intercept=False)
    else:
        X, names = design_matrix, list(design_matrix.columns)
    rows = df if len(X) == len(df) else df.loc[X.index]
    ties = spec.options.get("ties", "efron")
    t = rows[stop].to_numpy(dtype=float)
    ev = rows["event"].to_numpy()
    st = None if start is None else rows[start].to_numpy(dtype=float)
    sv = None if strata is None else rows[strata].to_numpy()
    if coef is None:
        coef = coxph_fit(X.to_numpy(), t, ev, start=st, strata=sv, ties=ties, names=names).coef
    # Group the columns by formula term, as R's cox.zph(terms = TRUE).
    terms = {}
    for term, term_cols in X.attrs["terms"].items():
        cols = [names.index(c) for c in term_cols if c in names]
        if cols:
            terms[names[cols[0]] if len(cols) == 1 else term] = cols
    return cox_zph(
        X.to_numpy(),
        t,
        ev,
        coef,
        start=st,
        strata=sv,
        ties=ties,
        names=names,
        terms=terms,
        risksets=risksets,
    )


def km_quantile(time, surv, p: float = 0.5, tol: float = float(np.finfo(float).eps) ** 0.5):
    """The time where a survival curve falls to 1 - p, with R's conventions (quantile.survfit).

    `time` are the curve's time points (event and censoring times), `surv` its values (NaN
    allowed, e.g. a confidence limit where S = 0).  The quantile is the first time with
    S <= 1 - p; if the curve equals 1 - p exactly (within `tol`) on a stretch, it is the midpoint
    of that stretch, ending at the next drop or, if none follows, at the last time point.  NaN if
    the curve never gets there.
    """
    x = np.concatenate([[0.0], np.asarray(time, dtype=float)])
    y = np.concatenate([[0.0], 1.0 - np.asarray(surv, dtype=float)])
    if not np.any(y >= p):  # (R: max(y) < p, NaN ignored)
        return float("nan")
    xmax = x[-1]
    _, first = np.unique(y, return_index=True)  # drop repeated values, keep the first
    first = np.sort(first)
    x, y = x[first], y[first]
    last_ok = not np.isnan(y[-1])
    ok = ~np.isnan(y)
    x, y = x[ok], y[ok]
    i1 = np.flatnonzero(y + tol >= p)
    i2 = np.flatnonzero(y - tol >= p)
    if last_ok and abs(p - y[-1]) < tol:
        return float((x[i1[0]] + xmax) / 2.0) if i1.size else float("nan")
    if not i1.size or not i2.size:
        return float("nan")
    return float((x[i1[0]] + x[i2[0]]) / 2.0)


def _km_table(
    time: np.ndarray, event: np.ndarray, conf_level: float, entry: np.ndarray | None = None
) -> pd.DataFrame:
    """Kaplan-Meier with Greenwood variance and R survfit's default 'log' confidence interval.

    ``std_err`` is the standard error of S (``summary.survfit``'s std.err); ``std_err_log`` is
    that of -log S, which R's ``survfit`` object stores as ``std.err``. With `entry` (left
    truncation) the risk set at t holds the rows with entry < t <= time, as R's
    ``survfit(Surv(entry, time, event))``.
    """
    if entry is None:
        from lifelines import KaplanMeierFitter

        km = KaplanMeierFitter().fit(time, event)
        et = km.event_table
        t = et.index.to_numpy(dtype=float)
        n_risk = et["at_risk"].to_numpy()
        d = et["observed"].to_numpy()
        n_censor = et["censored"].to_numpy()
        surv = km.survival_function_.to_numpy()[:, 0]
    else:
        t, n_risk, d, n_censor = _risk_table(entry, time, event)
        surv = np.cumprod(1.0 - d / np.where(n_risk > 0, n_risk, 1))
    keep = (d > 0) | (n_censor > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        greenwood = np.cumsum(np.where(n_risk > d, d / (n_risk * (n_risk - d)), np.inf * (d > 0)))
    se_log = np.sqrt(greenwood)
    z = norm_ppf(0.5 + conf_level / 2.0)
    table = pd.DataFrame(
        {
            "time": t,
            "n_risk": n_risk,
            "n_event": d,
            "n_censor": n_censor,
            "surv": surv,
            "std_err": surv * se_log,
            "std_err_log": np.where(surv > 0, se_log, np.nan),  # survfit()$std.err
            # R: no interval where S = 0 (NA), the upper limit capped at 1
            "conf_low": np.where(surv > 0, surv * np.exp(-z * se_log), np.nan),
            "conf_high": np.where(surv > 0, np.minimum(surv * np.exp(z * se_log), 1.0), np.nan),
        }
    )
    return table[keep & (t > 0)].reset_index(drop=True)


def _n_at_risk(entry: np.ndarray, time: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Rows with entry < t <= time at each of the times `t`."""
    leaving, entering = np.sort(time), np.sort(entry)
    return (leaving.size - np.searchsorted(leaving, t, side="left")) - (
        entering.size - np.searchsorted(entering, t, side="left")
    )


def _risk_table(
    entry: np.ndarray, time: np.ndarray, event: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distinct times with the rows at risk (entry < t <= time), events and censorings there."""
    entry = np.asarray(entry, dtype=float)
    time = np.asarray(time, dtype=float)
    ev = np.asarray(event) == 1
    t = np.unique(time)
    pos = np.searchsorted(t, time)
    d = np.bincount(pos[ev], minlength=t.size)
    n_censor = np.bincount(pos[~ev], minlength=t.size)
    return t, _n_at_risk(entry, time, t), d, n_censor


def logrank_delayed_entry(
    entry: np.ndarray, time: np.ndarray, event: np.ndarray, group: np.ndarray
) -> tuple[float, float]:
    """Two-group log-rank chi-square (1 df) and p-value on (entry, time] risk sets, with
    survdiff's hypergeometric variance; equals R's survdiff when every entry is 0."""
    entry = np.asarray(entry, dtype=float)
    time = np.asarray(time, dtype=float)
    ev = np.asarray(event) == 1
    g = np.asarray(group, dtype=bool)
    t = np.unique(time[ev])
    n = _n_at_risk(entry, time, t).astype(float)
    n1 = _n_at_risk(entry[g], time[g], t).astype(float)
    d = np.bincount(np.searchsorted(t, time[ev]), minlength=t.size).astype(float)
    d1 = np.bincount(np.searchsorted(t, time[ev & g]), minlength=t.size).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.where(n > 1, d * (n1 / n) * (1 - n1 / n) * (n - d) / np.maximum(n - 1, 1), 0.0)
        stat = float(np.sum(d1 - d * n1 / n) ** 2 / np.sum(var)) if t.size else float("nan")
    return stat, float(chi2_sf(stat, 1))


MCF_COLUMNS = (
    "time",
    "n_risk",
    "n_event",
    "mcf",
    "std_err",
    "std_err_naive",
    "conf_low",
    "conf_high",
)
# Participants per chunk of the clustered MCF variance: a chunk holds one float64 array of
# (participants x distinct event times) cells, at most this many (8 MB; small enough to stay in
# cache, which is faster than larger chunks).
MCF_CHUNK_CELLS = 2**20


def mean_cumulative_function(
    cp: pd.DataFrame, *, conf_level: float = 0.95, chunk_size: int | None = None
) -> pd.DataFrame:
    """Nelson-Aalen estimate of the mean cumulative number of episodes, from (start, stop] rows,
    with its participant-clustered standard error and confidence interval.

    At each event time t the risk set holds the rows with start < t <= stop, as in R. Columns:

    - ``time``, ``n_risk`` (rows at risk), ``n_event``, ``mcf`` (sum of n_event / n_risk): R's
      ``survfit(Surv(start, stop, event) ~ 1)`` ``time``, ``n.risk``, ``n.event``, ``cumhaz``.
    - ``std_err``: the robust (infinitesimal-jackknife, Lawless-Nadeau) standard error, clustered
      on ``participant_id`` so that it allows for the dependence of one participant's episodes:
      R's ``std.chaz`` of ``survfit(..., id = participant_id, robust = TRUE)`` (robust is R's
      default with an id once some participant has two or more events).  It is
      sqrt(sum_i U_i(t)^2) with U_i(t) = sum over event times s <= t of
      (dN_i(s) - Y_i(s) dA(s)) / Y(s), where dN_i(s) are participant i's events at s, Y_i(s) their
      rows at risk, Y(s) all rows at risk and dA(s) = d(s) / Y(s) the MCF's increment.
    - ``std_err_naive``: sqrt(sum d / Y^2), the Poisson-type Nelson-Aalen standard error that
      treats every episode as independent (R's ``std.chaz`` without an id); for reference only.
    - ``conf_low``, ``conf_high``: the `conf_level` interval on the plain scale from the robust
      standard error, ``mcf -/+ z * std_err`` with the lower limit floored at 0, the interval R's
      ``plot.survfit(fit, cumhaz = TRUE)`` draws (``survfit_confint``, ``conf.type = "plain"``).

    The variance is computed in chunks of `chunk_size` participants (default: as many as keep a
    chunk's participants x event-times array within :data:`MCF_CHUNK_CELLS` cells, at most 20k).
    """
    rs = RiskSets(
        cp["stop"].to_numpy(dtype=float),
        cp["event"].to_numpy() == 1,
        cp["start"].to_numpy(dtype=float),
    )
    times = rs.group_time
    at_risk = rs.n_at_risk()  # rows with start < t <= stop
    d = np.bincount(rs.ev_group, minlength=rs.ngroups)
    haz = d / at_risk
    mcf = np.cumsum(haz)
    var = _mcf_clustered_variance(cp[ID].to_numpy(), rs, at_risk, haz, chunk_size)
    se = np.sqrt(var)
    z = norm_ppf(0.5 + conf_level / 2.0)
    return pd.DataFrame(
        {
            "time": times,
            "n_risk": at_risk,
            "n_event": d,
            "mcf": mcf,
            "std_err": se,
            "std_err_naive": np.sqrt(np.cumsum(haz / at_risk)),
            "conf_low": np.maximum(mcf - z * se, 0.0),
            "conf_high": mcf + z * se,
        }
    )


def _mcf_clustered_variance(
    ids: np.ndarray,
    rs: RiskSets,
    n_risk: np.ndarray,
    haz: np.ndarray,
    chunk_size: int | None = None,
) -> np.ndarray:
    """sum_i U_i(t)^2 at each event time (see :func:`mean_cumulative_function`), as R's
    survfitkm computes it (no small-sample factor).  ``rs``: the risk sets of the rows (one
    stratum), whose at-risk ranges ``hl <= g < hs`` are the rows' event-time indices.

    Participants are taken in order of their last event time at risk, `chunk_size` at a time.
    Per chunk one (participants x event times up to the chunk's last + 1) array: the difference
    array of the rows at risk (+1 at a row's first event time after start, -1 after its stop),
    summed along time into Y_i(t), times -dA(t) / Y(t), plus 1 / Y(t) at each of the
    participant's events, summed along time again into U_i(t). Past a participant's last row U_i
    stays put, so the chunk's last column (its final U_i) covers the later event times.
    """
    k = rs.ngroups
    var = np.zeros(k)
    if k == 0:
        return var
    # rows at risk over event-time indices [lo, hi): times[lo] > start, times[hi - 1] <= stop
    event = np.zeros(rs.n, dtype=bool)
    event[rs.ev_pos] = True
    lo, hi = rs.hl, rs.hs
    if not rs.use_all:  # a row at risk at no event time does not move U
        ids, lo, hi, event = ids[rs.used], rs.hl_u, rs.hs_u, event[rs.used]
    codes, uniq = pd.factorize(ids, sort=False)
    n_part = uniq.size
    last = np.zeros(n_part, dtype=hi.dtype)
    np.maximum.at(last, codes, hi)
    by_last = np.argsort(last, kind="stable")
    rank = np.empty(n_part, dtype=np.intp)
    rank[by_last] = np.arange(n_part)
    codes = rank[codes]
    last = last[by_last]
    order = np.argsort(codes, kind="stable")
    codes, lo, hi, event = codes[order], lo[order], hi[order], event[order]
    if chunk_size is None:
        chunk_size = min(20_000, max(1, MCF_CHUNK_CELLS // (k + 1)))
    w_event = np.append(1.0 / n_risk, 0.0)  # an event at t moves its participant's U by 1/Y(t)
    minus_h = np.append(-haz / n_risk, 0.0)  # every row at risk at t moves it by -dA(t)/Y(t)
    firsts = np.arange(0, n_part, chunk_size)
    bounds = np.searchsorted(codes, np.append(firsts, n_part))
    for p0, r0, r1 in zip(firsts, bounds[:-1], bounds[1:], strict=True):
        n = min(chunk_size, n_part - int(p0))
        end = int(last[p0 + n - 1])  # columns 0..end-1: event times; column end: after them
        width = end + 1
        base = (codes[r0:r1] - p0) * width
        cells = np.bincount(
            np.concatenate([base + lo[r0:r1], base + hi[r0:r1]]),
            weights=np.repeat([1.0, -1.0], r1 - r0),
            minlength=n * width,
        ).reshape(n, width)
        np.cumsum(cells, axis=1, out=cells)  # Y_i(t)
        cells *= minus_h[:width]
        e = event[r0:r1]
        at = hi[r0:r1][e] - 1  # the row's stop is this event time
        np.add.at(cells.reshape(-1), base[e] + at, w_event[at])
        np.cumsum(cells, axis=1, out=cells)  # U_i(t)
        ss = np.einsum("ij,ij->j", cells, cells)
        var[:end] += ss[:end]
        var[end:] += ss[end]
    return var


@register
class KaplanMeier(Model):
    """Kaplan-Meier by arm with log-rank test, and the mean cumulative function of episodes."""

    kind: ClassVar[str] = "kaplan_meier"
    datasets: ClassVar[tuple[str, ...]] = ("first_episode", "counting_process")
    adjustable: ClassVar[bool] = False
    group: ClassVar[str] = "descriptive"
    title: ClassVar[str] = "Kaplan-Meier, log-rank and mean cumulative function"
    effect_measure: ClassVar[str | None] = None
    estimand: ClassVar[str] = (
        "per arm, the probability of remaining free of episodes by time t and the mean "
        "cumulative number of episodes per participant by time t (participants censored at the "
        "end of follow-up); log-rank test of equal first-episode hazards"
    )
    extras: ClassVar[tuple[ExtraTable, ...]] = (
        ExtraTable("survival", "Kaplan-Meier estimate by arm", "hidden"),
        ExtraTable("mcf", "Mean cumulative function by arm", "hidden"),
        ExtraTable("medians", "Median days to the first episode"),
        ExtraTable("logrank", "Log-rank test"),
    )
    reference: ClassVar[str] = "Kaplan and Meier (1958); Nelson (2003)"
    r_call: ClassVar[str] = (
        "survfit(Surv(time, event) ~ arm); survdiff(...); "
        "survfit(Surv(start, stop, event) ~ arm, id = participant_id)"
    )

    def fit(
        self, spec: ModelSpec, *, first_episode: pd.DataFrame, counting_process: pd.DataFrame
    ) -> ModelResult:
        from lifelines.statistics import logrank_test

        fe, note = _delayed_entry(first_episode)
        counts = {"n_participants": int(len(fe)), "n_events": int(fe["event"].sum())}
        msg = _arm_check(spec, fe)
        if msg:
            raise NotEstimable(msg, **counts)
        control, interv = spec.arms["control"], spec.arms["intervention"]
        surv, mcf, med = [], [], []
        for label in (control, interv):
            g = fe[fe["arm"].astype(str) == label]
            entry = None if note is None else g["entry"].to_numpy(float)
            tab = _km_table(
                g["time"].to_numpy(float), g["event"].to_numpy(), spec.conf_level, entry
            )
            surv.append(tab.assign(arm=label))
            med.append(
                {
                    "arm": label,
                    "n": len(g),
                    "events": int(g["event"].sum()),
                    "median_time": km_quantile(tab["time"], tab["surv"]),
                    "conf_low": km_quantile(tab["time"], tab["conf_low"]),
                    "conf_high": km_quantile(tab["time"], tab["conf_high"]),
                }
            )
            c = counting_process[counting_process["arm"].astype(str) == label]
            mcf.append(mean_cumulative_function(c, conf_level=spec.conf_level).assign(arm=label))
        a = fe["arm"].astype(str) == interv
        if note is None:
            lr = logrank_test(
                fe.loc[~a, "time"], fe.loc[a, "time"], fe.loc[~a, "event"], fe.loc[a, "event"]
            )
            lr_stat, lr_p = float(lr.test_statistic), float(lr.p_value)
        else:
            lr_stat, lr_p = logrank_delayed_entry(fe["entry"], fe["time"], fe["event"], a)
        table = tidy(
            spec,
            ["logrank"],
            np.array([np.nan]),
            np.array([np.nan]),
            robust=False,
            log_likelihood=None,
            n_participants=counts["n_participants"],
            n_events=counts["n_events"],
        )
        table["statistic"] = lr_stat
        table["p_value"] = lr_p
        order = ["arm", "time", "n_risk", "n_event", "n_censor", "surv", "std_err", "std_err_log"]
        extras = {
            "survival": pd.concat(surv, ignore_index=True)[[*order, "conf_low", "conf_high"]],
            "logrank": pd.DataFrame({"statistic": [lr_stat], "df": [1], "p_value": [lr_p]}),
            "medians": pd.DataFrame(med),
            "mcf": pd.concat(mcf, ignore_index=True)[["arm", *MCF_COLUMNS]],
        }
        return _noted(ModelResult(table, extras), note or "")
