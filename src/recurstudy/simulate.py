"""Simulate a cohort in the data contract's format, with a known truth.

Generative model (all times in days from enrolment, continuous unless said otherwise):

- participants are randomised 1:1 (a random permutation of a balanced allocation);
- covariates: age, sex, baseline pain (NRS), prior episodes;
- a gamma frailty ``Z`` of mean 1 and variance `frailty_var` (overdispersion) per participant;
- episodes form a recurrent-event process whose intensity while at risk is
  ``r = rate_per_day * rate_ratio**arm * exp(x'beta) * Z``. After an episode's onset the
  participant is in the episode until it resolves (a gamma(2) duration of mean
  `episode_mean_days`, resolved on the ceiling day) and at risk again from the day it resolved
  (plus `washout_days`); with `risk_during_episodes` the intensity applies over total time
  instead (a Poisson process given ``Z``; episodes may overlap), which is what models without
  `exclude_episode_time` assume. Onset days are the ceiling of the continuous onset times (so day
  >= 1), at most one onset a day;
- planned follow-up `followup_days` (or a draw from `followup_sample`). Dropout, three ways:

  * non-informative (both links 0): a fraction `dropout` leaves at a uniform day in
    ``1 .. followup_days - 1``; leavers are ``withdrawn`` or ``lost_to_followup`` (half each);
  * frailty-linked (`dropout_frailty_link` ``k`` != 0, `dropout_episode_link` 0): the same
    follow-up lengths are reassigned in the order of latent times ``E / Z**k`` (a dropout hazard
    proportional to ``Z**k``): the share leaving early is kept, who leaves is not;
  * episode-linked (`dropout_episode_link` ``g`` != 0): a dropout hazard
    ``h0(t) * Z**k * exp(g * N(t-))``, ``N(t-)`` the episodes had so far, where
    ``h0(t) = p / (F - 1 - p t)`` on ``t < F - 1`` (``p = dropout``, ``F = followup_days``) is the
    hazard under which a fraction ``p`` leaves at a uniform time (the non-informative case). With
    ``k = 0`` this dropout is missing at random given the observed history (identifiable by
    inverse-probability-of-censoring weights on the episodes so far);

  informative leavers are ``withdrawn``;
- a terminal event (death) with constant hazard
  ``death_rate_per_day * Z**death_frailty_link * death_rate_ratio**arm``; a participant who dies
  before the end of follow-up has ``end_reason = death``, follow-up ending on the day of death and
  no episode after it;
- pain scores at the scheduled weeks within follow-up: baseline pain reduced by a fraction that
  grows linearly to the arm's `pain_reduction` at week 6 and stays there, plus participant-level
  random intercept and slope and visit noise, rounded to 0..10.

Generation is vectorised over participants; the only loop is over the episode number, over the
participants whose process has not yet passed their follow-up (memory linear in the number of
episodes). The same seed and parameters give the same bytes: one numpy Generator draws the arms,
covariates, frailties, episodes and pain scores in a fixed order, and two side streams (seeded
``[seed, 2]`` and ``[seed, 3]``) the latent death and episode-linked dropout times, so that the
episode process of a seed does not change with the death or dropout parameters (only where it is
cut). The CSVs are written with fixed formatting.

The known truth (:func:`truth`, the demo's ``truth.json``) holds the conditional rate ratio and the
true marginal mean number of episodes per arm while alive, ``E[N(t ∧ D)]`` (computed by numeric
integration over the frailty and the covariates, :func:`marginal_mean`), in the absence of dropout.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recurstudy.contract import ARM, DEFAULT_ARMS, ID, TABLES

EPOCH = np.datetime64("2025-01-06")
# Pain-score generative constants (NRS points): baseline ~ N(mean, sd) rounded to 0..10; after
# baseline, participant random intercept and slope (per sqrt(week)) and visit noise.
PAIN_BASELINE_MEAN = 5.5
PAIN_BASELINE_SD = 1.8
PAIN_INTERCEPT_SD = 0.6
PAIN_SLOPE_SD = 0.15
PAIN_NOISE_SD = 0.7
# Covariate distributions (the truth integrates over them): age ~ N(26, 6) rounded to 16..60,
# prior episodes ~ Poisson(1.5); female with probability 0.45.
AGE_MEAN, AGE_SD, AGE_MIN, AGE_MAX = 26.0, 6.0, 16, 60
PRIOR_MEAN = 1.5
SITE_LABELS = ("site_A", "site_B", "site_C", "site_D")
END_REASON_LABELS = ("completed", "withdrawn", "lost_to_followup", "death")


@dataclass
class SimulationParams:
    """Parameters of the simulated study; defaults mirror the study the project was made for."""

    n: int = 300
    seed: int = 20261126
    followup_days: int = 182
    enrol_window_days: int = 180
    rate_per_day: float = 0.02  # control-arm episode intensity at covariate reference values
    rate_ratio: float = 0.32  # true intervention effect on the episode rate (68% reduction)
    frailty_var: float = 0.5  # gamma frailty variance (0 = Poisson process)
    dropout: float = 0.10  # fraction leaving before the planned end
    beta_age_per_10y: float = 0.10
    beta_prior_episode: float = 0.15
    beta_baseline_pain: float = 0.08
    episode_mean_days: float = 4.0  # mean episode duration
    pain_weeks: tuple[int, ...] = (0, 2, 4, 6, 12, 26)
    pain_reduction: dict[str, float] = field(
        default_factory=lambda: {"control": 0.30, "intervention": 0.82}
    )
    # labels written in the arm column
    arms: tuple[str, str] = (DEFAULT_ARMS["control"], DEFAULT_ARMS["intervention"])
    allocation: float = 0.5  # fraction allocated to the intervention
    # Follow-up lengths (days) to draw from instead of followup_days/dropout, e.g. an observed
    # study's percentiles (staggered entry: everyone followed to a common calendar date).
    followup_sample: tuple[int, ...] | None = None
    # Whether episodes may begin while one is under way (the intensity applies over total time,
    # as the models assume without exclude_episode_time), or only once it has resolved plus
    # `washout_days` (as they assume with exclude_episode_time / washout_days). The power
    # simulation sets these to match the claim's risk-set settings, so that the simulated effect
    # is the one the model estimates.
    risk_during_episodes: bool = False
    washout_days: int = 0
    # Informative dropout: a dropout hazard proportional to frailty**dropout_frailty_link
    # (0: dropout unrelated to the frailty). See the module docstring.
    dropout_frailty_link: float = 0.0
    # Terminal event (death): hazard death_rate_per_day * Z**death_frailty_link *
    # death_rate_ratio**arm (Z the episode process's gamma frailty; 0: no deaths).
    death_rate_per_day: float = 0.0
    death_frailty_link: float = 0.0
    death_rate_ratio: float = 1.0  # the intervention arm's multiplier on the death hazard
    # Dropout hazard multiplied by exp(dropout_episode_link * episodes so far): informative
    # dropout, missing at random given the observed history (0: off). See the module docstring.
    dropout_episode_link: float = 0.0


# The demo: the default study plus a small terminal-event hazard (about 4% die over the 6 months,
# more often the episode-prone), so that the while-alive estimands differ from the others.
PRESETS: dict[str, dict] = {
    "demo": {"death_rate_per_day": 0.0002, "death_frailty_link": 1.0},
}


def _check(p: SimulationParams) -> None:
    """Refuse parameters the generative model cannot use, naming the field."""
    bad = []
    if p.n < 1:
        bad.append("n must be at least 1")
    if p.followup_days < 2:
        bad.append("followup_days must be at least 2")
    for name in ("rate_per_day", "rate_ratio", "death_rate_per_day", "death_rate_ratio"):
        v = getattr(p, name)
        if not (math.isfinite(v) and v >= 0):
            bad.append(f"{name} must be a finite number >= 0 (got {v!r})")
    for name in ("frailty_var", "episode_mean_days", "dropout"):
        v = getattr(p, name)
        if not (math.isfinite(v) and v >= 0):
            bad.append(f"{name} must be a finite number >= 0 (got {v!r})")
    if not 0 <= p.dropout <= 1:
        bad.append(f"dropout must be in [0, 1] (got {p.dropout!r})")
    for name in ("dropout_frailty_link", "death_frailty_link", "dropout_episode_link"):
        if not math.isfinite(getattr(p, name)):
            bad.append(f"{name} must be finite")
    if bad:
        raise ValueError("simulation parameters: " + "; ".join(bad))


def _centre_age(age: np.ndarray) -> np.ndarray:
    return (age - 25.0) / 10.0


def _ids(n: int) -> np.ndarray:
    """``P0001``, ``P0002``, ... (at least four digits), built without per-element Python."""
    width = max(4, len(str(n)))
    num = np.arange(1, n + 1, dtype=np.int64)[:, None]
    digits = (num // 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)) % 10
    buf = np.empty((n, width + 1), dtype=np.uint8)
    buf[:, 0] = ord("P")
    buf[:, 1:] = digits + ord("0")
    return buf.view(f"S{width + 1}").ravel().astype(f"U{width + 1}")


def _planned_days(p: SimulationParams) -> int:
    return p.followup_days if p.followup_sample is None else int(max(p.followup_sample))


def _informative_followup(
    p: SimulationParams, fu_days: np.ndarray, frailty: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Follow-up lengths reassigned so that dropout rises with the frailty: the shortest go to
    the participants with the earliest latent dropout time ``E / frailty**link`` (a dropout
    hazard proportional to ``frailty**link``). The multiset of lengths is kept. The latent
    times come from a stream of their own (seeded ``[seed, 1]``), so the main stream's draws
    (arms, covariates, frailties) are those of the same seed without informative dropout."""
    side = np.random.default_rng([p.seed, 1])
    latent = side.exponential(1.0, fu_days.size) / frailty**p.dropout_frailty_link
    out = np.empty_like(fu_days)
    out[np.argsort(latent, kind="stable")] = np.sort(fu_days, kind="stable")
    return out, out < _planned_days(p)


def _episode_process(
    p: SimulationParams, rng: np.random.Generator, intensity: np.ndarray, horizon: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Episodes up to each participant's `horizon` (day): participant index, continuous onset
    time, onset day and resolution day, sorted by participant then onset. Loops over the episode
    number only, each pass drawing one gap and one duration for every participant whose process
    has not yet passed their horizon."""
    n = intensity.size
    active = np.flatnonzero(intensity > 0)
    at_risk_from = np.zeros(n)
    last_onset = np.zeros(n)
    chunks = []
    while active.size:
        gap = rng.exponential(1.0, active.size) / intensity[active]
        dur = rng.gamma(2.0, p.episode_mean_days / 2.0, active.size)
        t_on = at_risk_from[active] + gap
        # one onset per day at most (the contract's episodes are days)
        onset = np.maximum(np.ceil(t_on), last_onset[active] + 1)
        keep = onset <= horizon[active]
        active, t_on, onset = active[keep], t_on[keep], onset[keep]
        resolved = np.ceil(t_on + dur[keep])
        chunks.append((active, t_on, onset, resolved))
        last_onset[active] = onset
        if p.risk_during_episodes:
            at_risk_from[active] = t_on  # a Poisson process (given the frailty) over total time
        else:
            at_risk_from[active] = resolved + p.washout_days
    if not chunks:
        empty = np.zeros(0)
        return np.zeros(0, dtype=np.int64), empty, empty, empty
    pid, t_on, onset, resolved = (np.concatenate(c) for c in zip(*chunks, strict=True))
    order = np.argsort(pid, kind="stable")  # passes are in onset order within a participant
    return pid[order], t_on[order], onset[order], resolved[order]


def _dropout_base_hazard(p: SimulationParams) -> tuple[float, float]:
    """(span, share) of the baseline dropout hazard ``h0(t) = share / (span - share t)`` on
    ``0 <= t < span``: under it a fraction `share` leaves at a uniform time before `span`."""
    return float(_planned_days(p) - 1), float(min(max(p.dropout, 0.0), 1.0))


def _episode_linked_dropout(
    p: SimulationParams, frailty: np.ndarray, ep_pid: np.ndarray, ep_t: np.ndarray
) -> np.ndarray:
    """Continuous dropout times (inf: none) under the hazard
    ``h0(t) Z**dropout_frailty_link exp(dropout_episode_link N(t-))``: each participant's latent
    ``E ~ Exp(1)`` (side stream ``[seed, 3]``) is consumed segment by segment between onsets,
    ``H0(t) = -log(1 - share t / span)`` being inverted in closed form in the crossing segment."""
    n = frailty.size
    e = np.random.default_rng([p.seed, 3]).exponential(1.0, n)
    span, share = _dropout_base_hazard(p)
    if share <= 0:
        return np.full(n, np.inf)
    h_max = -math.log1p(-share) if share < 1 else np.inf

    def big_h(t: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return -np.log1p(-share * np.minimum(t, span) / span)

    def big_h_inv(h: np.ndarray) -> np.ndarray:
        return span * -np.expm1(-h) / share

    with np.errstate(divide="ignore", over="ignore"):
        base = frailty**p.dropout_frailty_link
    counts = np.bincount(ep_pid, minlength=n)
    starts = np.cumsum(counts) - counts
    j = np.arange(ep_pid.size) - starts[ep_pid]  # episodes had before this one
    prev_t = np.where(j > 0, np.concatenate([[0.0], ep_t[:-1]]), 0.0)
    mult = base[ep_pid] * np.exp(p.dropout_episode_link * j)
    inc = mult * (big_h(ep_t) - big_h(prev_t))
    cum = np.cumsum(inc)
    offset = np.zeros(n)
    has = counts > 0
    offset[has] = cum[starts[has]] - inc[starts[has]]
    at_onset = cum - offset[ep_pid]  # cumulative dropout hazard at each onset
    before = at_onset - inc
    e_ep = e[ep_pid]
    cross = (at_onset >= e_ep) & (before < e_ep)
    out = np.full(n, np.inf)
    c = np.flatnonzero(cross)
    out[ep_pid[c]] = big_h_inv(big_h(prev_t[c]) + (e_ep[c] - before[c]) / mult[c])
    # No crossing before the last onset: the last segment runs from it (or from 0) onwards.
    rest = np.isinf(out)
    last = starts + counts - 1
    total = np.zeros(n)
    last_t = np.zeros(n)
    total[has] = at_onset[last[has]]
    last_t[has] = ep_t[last[has]]
    mult_last = base * np.exp(p.dropout_episode_link * counts)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = big_h(last_t) + (e - total) / mult_last
    ok = rest & (e > total) & (h < h_max)
    out[ok] = big_h_inv(h[ok])
    return out


@dataclass(frozen=True)
class _Text:
    """A text column as `labels[codes]` (``codes`` None: the labels themselves)."""

    labels: np.ndarray
    codes: np.ndarray | None


@dataclass(frozen=True)
class _Date:
    """A date column as days after EPOCH, `missing` marking empty cells."""

    days: np.ndarray
    missing: np.ndarray | None = None


def _simulate(params: SimulationParams) -> dict[str, dict[str, object]]:
    """The three tables as columns (numbers, :class:`_Text`, :class:`_Date`), so that the
    writer builds Arrow arrays without per-row Python objects."""
    p = params
    _check(p)
    rng = np.random.default_rng(p.seed)
    n = p.n

    if p.allocation == 0.5:
        arm = rng.permutation(np.arange(n) % 2)  # 0 control, 1 intervention; balanced
    else:
        arm = rng.permutation((np.arange(n) < round(n * p.allocation)).astype(int))
    enrol = rng.integers(0, p.enrol_window_days, n)
    age = np.clip(np.round(rng.normal(AGE_MEAN, AGE_SD, n)), AGE_MIN, AGE_MAX).astype(int)
    female = rng.random(n) < 0.45
    baseline_pain = rng.normal(PAIN_BASELINE_MEAN, PAIN_BASELINE_SD, n)
    baseline_pain = np.clip(np.round(baseline_pain), 0, 10).astype(int)
    prior = rng.poisson(PRIOR_MEAN, n)

    leaves = rng.random(n) < p.dropout
    leave_day = rng.integers(1, p.followup_days, n)
    fu_days = np.where(leaves, leave_day, p.followup_days)
    if p.followup_sample is not None:
        fu_days = rng.choice(np.asarray(p.followup_sample, dtype=int), n)
    u_reason = rng.random(n)

    if p.frailty_var > 0:
        frailty = rng.gamma(1.0 / p.frailty_var, p.frailty_var, n)
    else:
        frailty = np.ones(n)
    informative = p.dropout_frailty_link != 0 or p.dropout_episode_link != 0
    if p.dropout_episode_link != 0:
        # dropout comes from the episode-linked hazard below, not from the draws above
        if p.followup_sample is None:
            fu_days = np.full(n, p.followup_days)
        leaves = np.zeros(n, dtype=bool)
    elif p.dropout_frailty_link != 0 and p.frailty_var > 0:
        fu_days, leaves = _informative_followup(p, fu_days, frailty)
    linpred = (
        p.beta_age_per_10y * _centre_age(age)
        + p.beta_prior_episode * (prior - PRIOR_MEAN)
        + p.beta_baseline_pain * (baseline_pain - PAIN_BASELINE_MEAN)
    )
    intensity = p.rate_per_day * np.where(arm == 1, p.rate_ratio, 1.0) * np.exp(linpred) * frailty

    # The episode process up to the administrative end (planned follow-up or non-informative /
    # frailty-linked dropout); death and episode-linked dropout then cut it.
    ep_pid, ep_t, ep_on, ep_res = _episode_process(p, rng, intensity, fu_days)
    severity = np.clip(np.round(rng.normal(6.0, 1.5, ep_pid.size)), 0, 10).astype(int)

    e_death = np.random.default_rng([p.seed, 2]).exponential(1.0, n)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        death_hazard = (
            p.death_rate_per_day
            * frailty**p.death_frailty_link
            * np.where(arm == 1, p.death_rate_ratio, 1.0)
        )
        death_t = np.where(death_hazard > 0, e_death / death_hazard, np.inf)
    if p.dropout_episode_link != 0:
        drop_t = _episode_linked_dropout(p, frailty, ep_pid, ep_t)
    else:
        drop_t = np.full(n, np.inf)
    admin = fu_days.astype(float)
    died = death_t < np.minimum(drop_t, admin)
    dropped = ~died & (drop_t < admin)
    cut = died | dropped
    end_t = np.where(died, death_t, np.where(dropped, drop_t, admin))
    fu_days = np.where(cut, np.maximum(np.ceil(end_t), 1), fu_days).astype(int)
    reason = np.where(leaves | dropped, np.where(informative | (u_reason < 0.5), 1, 2), 0)
    reason[died] = 3  # codes into END_REASON_LABELS

    keep = ep_on <= fu_days[ep_pid]
    keep &= ~cut[ep_pid] | (ep_t < end_t[ep_pid])  # nothing after death or dropout
    pid_idx = ep_pid[keep]
    on = ep_on[keep].astype(np.int64)
    res = ep_res[keep].astype(np.int64)
    severity = severity[keep]
    unresolved = res > fu_days[pid_idx]
    site = rng.integers(0, 4, n)

    # Pain scores at scheduled visits within follow-up.
    weeks = np.asarray(p.pain_weeks)
    vdays = weeks * 7
    # keyed by role (control / intervention), whatever the arms' labels
    red = np.where(arm == 1, p.pain_reduction["intervention"], p.pain_reduction["control"])
    ri = rng.normal(0.0, PAIN_INTERCEPT_SD, n)
    rs = rng.normal(0.0, PAIN_SLOPE_SD, n)
    frac = np.minimum(weeks / 6.0, 1.0)
    mean = baseline_pain[:, None] * (1.0 - red[:, None] * frac[None, :])
    noise = rng.normal(0.0, PAIN_NOISE_SD, (n, weeks.size))
    nrs = mean + (ri[:, None] + rs[:, None] * np.sqrt(weeks)[None, :]) * (weeks > 0) + noise
    nrs[:, 0] = baseline_pain  # week 0 is the baseline assessment itself
    nrs = np.clip(np.round(nrs), 0, 10).astype(np.int64)
    seen = vdays[None, :] <= fu_days[:, None]
    pi, vi = np.nonzero(seen)

    ids = _ids(n)
    return {
        "participants": {
            ID: _Text(ids, None),
            ARM: _Text(np.asarray(p.arms), arm),
            "enrolled_on": _Date(enrol),
            "followup_end": _Date(enrol + fu_days),
            "site": _Text(np.asarray(SITE_LABELS), site),
            "end_reason": _Text(np.asarray(END_REASON_LABELS), reason),
            "age": age,
            "sex": _Text(np.asarray(["M", "F"]), female.astype(np.int64)),
            "baseline_pain": baseline_pain,
            "prior_episodes": prior,
        },
        "episodes": {
            ID: _Text(ids, pid_idx),
            "onset_on": _Date(enrol[pid_idx] + on),
            "resolved_on": _Date(enrol[pid_idx] + res, missing=unresolved),
            "severity": severity,
        },
        "pain_scores": {
            ID: _Text(ids, pi),
            "assessed_on": _Date(enrol[pi] + vdays[vi]),
            "nrs": nrs[pi, vi],
        },
    }


def _pandas_column(col: object) -> np.ndarray:
    if isinstance(col, _Text):
        return col.labels if col.codes is None else col.labels[col.codes]
    if isinstance(col, _Date):
        out = EPOCH + col.days * np.timedelta64(1, "D")
        if col.missing is not None:
            out = np.where(col.missing, np.datetime64("NaT"), out)
        return out.astype("datetime64[ns]")
    return np.asarray(col)


def simulate_cohort(params: SimulationParams) -> dict[str, pd.DataFrame]:
    """Return the participants, episodes and pain_scores tables of one simulated cohort."""
    columns = _simulate(params)
    return {
        name: pd.DataFrame({k: _pandas_column(c) for k, c in columns[name].items()})
        for name in TABLES
    }


def _rounded_clipped_mean(mu: np.ndarray, sd: float) -> np.ndarray:
    """E[clip(round(X), 0, 10)] for X ~ N(mu, sd^2), exactly (rounding ties have probability 0)."""
    from scipy import stats

    mu = np.asarray(mu, dtype=float)[..., None]
    k = np.arange(11.0)
    upper = np.where(k < 10, stats.norm.cdf((k + 0.5 - mu) / sd), 1.0)
    lower = np.where(k > 0, stats.norm.cdf((k - 0.5 - mu) / sd), 0.0)
    return np.sum(k * (upper - lower), axis=-1)


def expected_pain(params: SimulationParams, role: str, week: float) -> float:
    """The true mean NRS of arm `role` (``control`` / ``intervention``) at `week`, on the scale
    the data are recorded (rounded and clipped to 0..10), under the generative model above: the
    quantity that a between-arm ratio of mean NRS estimates (``1 - expected_pain(p,
    "intervention", w) / expected_pain(p, "control", w)``). Computed exactly: a sum over the
    baseline's 11 values and the rounded score's 11 values of normal probabilities."""
    k = np.arange(11.0)
    z_hi = np.where(k < 10, (k + 0.5 - PAIN_BASELINE_MEAN) / PAIN_BASELINE_SD, np.inf)
    z_lo = np.where(k > 0, (k - 0.5 - PAIN_BASELINE_MEAN) / PAIN_BASELINE_SD, -np.inf)
    from scipy import stats

    p_base = stats.norm.cdf(z_hi) - stats.norm.cdf(z_lo)
    if week <= 0:
        return float(np.sum(k * p_base))
    frac = min(week / 6.0, 1.0)
    mu = k * (1.0 - params.pain_reduction[role] * frac)
    sd = float(np.sqrt(PAIN_INTERCEPT_SD**2 + PAIN_SLOPE_SD**2 * week + PAIN_NOISE_SD**2))
    return float(np.sum(p_base * _rounded_clipped_mean(mu, sd)))


# ---------------------------------------------------------------------------------------------
# The known truth, by numeric integration (not simulation).


def _discrete_normal(mean: float, sd: float, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Values and probabilities of ``clip(round(X), lo, hi)``, ``X ~ N(mean, sd^2)``."""
    from scipy import stats

    k = np.arange(lo, hi + 1, dtype=float)
    upper = np.where(k < hi, stats.norm.cdf((k + 0.5 - mean) / sd), 1.0)
    lower = np.where(k > lo, stats.norm.cdf((k - 0.5 - mean) / sd), 0.0)
    return k, upper - lower


def _covariate_eta(p: SimulationParams) -> tuple[np.ndarray, np.ndarray]:
    """The distribution of the linear predictor ``x'beta`` over the simulated covariates
    (independent: age, prior episodes, baseline pain), as atoms and probabilities (exact up to
    the Poisson tail beyond 40 prior episodes, below 1e-30)."""
    from scipy import stats

    a, pa = _discrete_normal(AGE_MEAN, AGE_SD, AGE_MIN, AGE_MAX)
    b, pb = _discrete_normal(PAIN_BASELINE_MEAN, PAIN_BASELINE_SD, 0, 10)
    k = np.arange(41.0)
    pk = stats.poisson.pmf(k, PRIOR_MEAN)
    eta = (
        p.beta_age_per_10y * _centre_age(a)[:, None, None]
        + p.beta_prior_episode * (k - PRIOR_MEAN)[None, :, None]
        + p.beta_baseline_pain * (b - PAIN_BASELINE_MEAN)[None, None, :]
    )
    prob = pa[:, None, None] * pk[None, :, None] * pb[None, None, :]
    eta, prob = eta.ravel(), prob.ravel()
    keep = prob > 0
    return eta[keep], prob[keep] / prob[keep].sum()


def _binned(u: np.ndarray, w: np.ndarray, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Masses `w` at points `u` moved onto a grid of spacing `h` with 4-point (cubic) Lagrange
    weights, so that ``sum_j w_j f(u_j) = sum_g W_g f(g)`` for any cubic ``f`` (error
    ``O(h^4 f'''')`` for smooth ``f``): the covariate expectation then needs ``f`` at a few
    hundred grid points instead of thousands of atoms."""
    u0 = float(u.min()) - 2 * h
    x = (u - u0) / h
    i = np.floor(x).astype(np.int64)
    s = x - i
    size = int(i.max()) + 3
    weights = (
        -s * (s - 1) * (s - 2) / 6,
        (s + 1) * (s - 1) * (s - 2) / 2,
        -(s + 1) * s * (s - 2) / 2,
        (s + 1) * s * (s - 1) / 6,
    )
    big_w = np.zeros(size)
    for off, lw in zip((-1, 0, 1, 2), weights, strict=True):
        big_w += np.bincount(i + off, weights=w * lw, minlength=size)
    grid = u0 + h * np.arange(size)
    used = big_w != 0
    return grid[used], big_w[used]


def _frailty_nodes(var: float, nodes: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-(generalised) Laguerre nodes and weights for ``E[f(Z)]``, ``Z ~ Gamma(1/var, var)``
    (mean 1, variance `var`); a single node at 1 when ``var = 0``."""
    if var <= 0:
        return np.ones(1), np.ones(1)
    from scipy.special import roots_genlaguerre

    x, w = roots_genlaguerre(nodes, 1.0 / var - 1.0)
    return var * x, w / w.sum()


def _cycle_pmf(p: SimulationParams, rates: np.ndarray, tau: int) -> np.ndarray:
    """``P(C = c)``, ``c = 0..tau``, for the integer cycle ``C = ceil(X + Y) + washout`` from one
    at-risk start to the next (``X ~ Exp(rate)`` the gap, ``Y ~ Gamma(2, mean/2)`` the episode):
    ``P(ceil(X+Y) = m) = F(m) - F(m-1)`` with ``F(s) = F_Y(s) - exp(-r s) E[exp(r Y); Y <= s]``
    in closed form for the gamma(2) duration."""
    r = rates[:, None]
    s = np.arange(tau + 1, dtype=float)[None, :]
    theta = p.episode_mean_days / 2.0
    if theta <= 0:
        cdf = -np.expm1(-r * s)
    else:
        b = 1.0 / theta - r
        x = b * s
        small = np.abs(x) < 1e-2
        xs = np.where(small, x, 0.0)
        # h(x) = (1 - exp(-x)(1 + x)) / x^2 as a series near 0
        h_small = 0.5 - xs / 3 + xs**2 / 8 - xs**3 / 30 + xs**4 / 144 - xs**5 / 840
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            tail_big = (np.exp(-r * s) - np.exp(-s / theta) * (1 + x)) / (theta * b) ** 2
        tail = np.where(small, np.exp(-r * s) * s**2 * h_small / theta**2, tail_big)
        f_y = -np.expm1(-s / theta) - (s / theta) * np.exp(-s / theta)
        cdf = np.clip(f_y - tail, 0.0, 1.0)
    pm = np.diff(cdf, axis=1, prepend=0.0)  # pm[:, m] = P(ceil(X+Y) = m), m >= 1
    out = np.zeros_like(pm)
    w = int(p.washout_days)
    if w <= tau:
        out[:, w:] = pm[:, : tau + 1 - w]
    return out


def _renewal_starts(p: SimulationParams, rates: np.ndarray, tau: int) -> np.ndarray:
    """``q[:, a] = P(an at-risk period starts on day a)``, ``a = 0..tau-1`` (``q_0 = 1``;
    ``q_a = sum_c q_{a-c} P(C = c)``): at-risk periods start on whole days, so the renewal
    equation is exact on the integers."""
    pc = _cycle_pmf(p, rates, tau)
    q = np.zeros((rates.size, max(tau, 1)))
    q[:, 0] = 1.0
    for a in range(1, tau):
        q[:, a] = np.einsum("ij,ij->i", q[:, a - 1 :: -1], pc[:, 1 : a + 1])
    return q


def _mean_from_starts(
    q: np.ndarray, rates: np.ndarray, death: float, times: np.ndarray
) -> np.ndarray:
    """``E[N(t ∧ D) | r, d]`` for the non-overlapping episode process (rates in rows, times in
    columns): an onset occurs at ``a + X`` after each at-risk start ``a`` (``X ~ Exp(r)``), before
    death with probability ``exp(-d (a + X))``, so
    ``E[N(t ∧ D)] = r / (r + d) sum_{a < t} q_a exp(-d a) (1 - exp(-(r + d)(t - a)))``,
    summed by a recursion over whole days."""
    n_a = q.shape[1]
    tot = rates + death
    frac = np.where(tot > 0, rates / np.where(tot > 0, tot, 1.0), 0.0)
    disc = q * np.exp(-death * np.arange(n_a, dtype=float))[None, :]
    partial = np.cumsum(disc, axis=1)  # sum_{a <= f} q_a exp(-d a)
    decayed = np.empty_like(disc)  # sum_{a <= f} q_a exp(-d a) exp(-(r + d)(f - a))
    g = np.zeros(rates.size)
    step = np.exp(-tot)
    for a in range(n_a):
        g = g * step + disc[:, a]
        decayed[:, a] = g
    f = np.minimum(np.ceil(times).astype(np.int64) - 1, n_a - 1)  # the last start a < t
    out = np.zeros((rates.size, times.size))
    ok = f >= 0
    fo = f[ok]
    lag = (times[ok] - fo)[None, :]
    out[:, ok] = frac[:, None] * (partial[:, fo] - np.exp(-tot[:, None] * lag) * decayed[:, fo])
    return out


def _mean_given_rate(
    p: SimulationParams, rates: np.ndarray, death: float, times: np.ndarray, tau: int
) -> np.ndarray:
    """``E[N(t ∧ D) | rate r, death hazard d]`` for each rate (rows) and time (columns).
    Poisson case (`risk_during_episodes`): ``r (1 - exp(-d t)) / d`` (``r t`` when ``d = 0``);
    otherwise :func:`_mean_from_starts` on the renewal probabilities of the at-risk starts."""
    if not p.risk_during_episodes:
        return _mean_from_starts(_renewal_starts(p, rates, tau), rates, death, times)
    t = times[None, :].astype(float)
    x = death * t
    phi = np.where(x > 0, -np.expm1(-x) / np.where(x > 0, x, 1.0), 1.0)
    return rates[:, None] * t * phi


def marginal_mean(
    params: SimulationParams,
    times: np.ndarray | list[float],
    *,
    with_death: bool = True,
    frailty_nodes: int = 64,
    grid: int = 256,
    bin_width: float = 0.02,
) -> dict[str, np.ndarray]:
    """True marginal mean number of episodes per arm by time t, in the absence of dropout:
    ``mu_arm(t) = E[N(t ∧ D)]``, episodes while alive (``with_death=False``: ``E[N(t)]``, no
    terminal event). By numeric integration, not simulation:

    ``E[N(t ∧ D)] = E_{Z, x}[ m(t; r = rate * rr**arm * exp(x'beta) * Z, d = d0 * Z**c *
    dr**arm) ]``, with ``m`` from :func:`_mean_given_rate` (the renewal sum of the
    non-overlapping episode process, or the Poisson formula), integrated over the gamma frailty
    ``Z`` by generalised Gauss-Laguerre quadrature (`frailty_nodes`) and over the covariates'
    exact discrete distribution (binned onto a grid of width `bin_width` in ``x'beta`` with cubic
    weights; ``m`` computed on `grid` log-spaced rates and interpolated by a cubic spline in log
    rate). Quadrature error: relative ~1e-7 (the tests compare with finer settings). The
    at-most-one-onset-a-day rule is not modelled (it only matters with `risk_during_episodes`
    at several episodes a day)."""
    from scipy.interpolate import CubicSpline

    p = params
    times = np.asarray(times, dtype=float)
    tau = int(math.ceil(max(float(times.max()), 1.0)))
    z, wz = _frailty_nodes(p.frailty_var, frailty_nodes)
    eta, w_eta = _binned(*_covariate_eta(p), bin_width)
    out = {}
    for role, rr, dr in (
        ("control", 1.0, 1.0),
        ("intervention", p.rate_ratio, p.death_rate_ratio),
    ):
        total = np.zeros(times.size)
        scale = p.rate_per_day * rr
        if scale <= 0:
            out[role] = total
            continue
        log_r = math.log(scale) + np.log(z)[:, None] + eta[None, :]  # (nodes, bins)
        lgrid = np.linspace(log_r.min() - 1e-6, log_r.max() + 1e-6, grid)
        q = None if p.risk_during_episodes else _renewal_starts(p, np.exp(lgrid), tau)
        for k, (zk, wk) in enumerate(zip(z, wz, strict=True)):
            d = p.death_rate_per_day * zk**p.death_frailty_link * dr if with_death else 0.0
            if q is None:
                m = _mean_given_rate(p, np.exp(log_r[k]), d, times, tau)
            else:
                spline = CubicSpline(lgrid, _mean_from_starts(q, np.exp(lgrid), d, times))
                m = spline(log_r[k])
            total += wk * (w_eta @ m)
        out[role] = total
    return out


def death_probability(params: SimulationParams, t: float, frailty_nodes: int = 64) -> dict:
    """True probability of death by day `t` per arm in the absence of dropout:
    ``1 - E_Z[exp(-d0 Z**c dr**arm t)]`` (gamma frailty ``Z``, quadrature)."""
    p = params
    z, wz = _frailty_nodes(p.frailty_var, frailty_nodes)
    out = {}
    for role, dr in (("control", 1.0), ("intervention", p.death_rate_ratio)):
        hz = p.death_rate_per_day * z**p.death_frailty_link * dr
        out[role] = float(1.0 - wz @ np.exp(-hz * t))
    return out


def truth_times(params: SimulationParams) -> np.ndarray:
    """The grid of the recorded marginal means: every 7 days, and tau (planned follow-up)."""
    tau = _planned_days(params)
    return np.unique(np.append(np.arange(0, tau, 7), tau)).astype(float)


def _sig(x: float, digits: int = 12) -> float:
    """Rounded to `digits` significant digits: truth.json does not carry quadrature noise."""
    return float(f"{x:.{digits}g}")


def truth(params: SimulationParams) -> dict:
    """The known truth of a simulated cohort, for recovery tests and the demo's truth.json.

    - ``rate_ratio`` (= ``conditional_rate_ratio``): the intervention's multiplier on the episode
      intensity given the frailty and covariates, over time at risk (outside episodes unless
      `risk_during_episodes`);
    - ``marginal_mean_while_alive``: ``E[N(t ∧ D)]`` per arm on ``times`` (every 7 days and tau,
      the planned follow-up), in the absence of dropout, :func:`marginal_mean`; its ratio at tau
      ``marginal_mean_ratio_while_alive`` (intervention / control; what a Ghosh-Lin
      proportional-means model estimates);
    - ``marginal_mean_no_death`` and ``marginal_rate_ratio``: the same without the terminal event
      (and without dropout), ``E[N_1(tau)] / E[N_0(tau)]``: the marginal rate ratio of the episode
      process over calendar time (equal to ``rate_ratio`` for a Poisson process given the
      frailty, i.e. with `risk_during_episodes`; slightly nearer 1 when time in an episode is not
      at risk);
    - ``death_probability_by_tau``: ``1 - E_Z[exp(-d(Z, arm) tau)]`` per arm, without dropout.
    """
    p = params
    times = truth_times(p)
    tau = float(times[-1])
    alive = marginal_mean(p, times, with_death=True)
    nodeath = marginal_mean(p, times, with_death=False)

    def ratio(m: dict) -> float | None:
        return _sig(m["intervention"][-1] / m["control"][-1]) if m["control"][-1] > 0 else None

    def table(m: dict) -> dict:
        return {role: [_sig(v) for v in m[role]] for role in ("control", "intervention")}

    return {
        "rate_ratio": p.rate_ratio,
        "conditional_rate_ratio": p.rate_ratio,
        "rate_reduction": round(1.0 - p.rate_ratio, 12),
        "log_rate_ratio": float(np.log(p.rate_ratio)) if p.rate_ratio > 0 else None,
        "control_rate_per_day": p.rate_per_day,
        "frailty_variance": p.frailty_var,
        "negbin_theta": (1.0 / p.frailty_var) if p.frailty_var > 0 else None,
        "covariate_log_rate_ratios": {
            "age_per_10_years_from_25": p.beta_age_per_10y,
            "prior_episodes_per_episode": p.beta_prior_episode,
            "baseline_pain_per_point": p.beta_baseline_pain,
        },
        "pain_reduction_at_week_6": dict(p.pain_reduction),
        "dropout": p.dropout,
        "dropout_frailty_link": p.dropout_frailty_link,
        "dropout_episode_link": p.dropout_episode_link,
        "death_rate_per_day": p.death_rate_per_day,
        "death_frailty_link": p.death_frailty_link,
        "death_rate_ratio": p.death_rate_ratio,
        "tau_days": tau,
        "times": [float(t) for t in times],
        "marginal_mean_while_alive": table(alive),
        "marginal_mean_ratio_while_alive": ratio(alive),
        "marginal_mean_no_death": table(nodeath),
        "marginal_rate_ratio": ratio(nodeath),
        "death_probability_by_tau": {k: _sig(v) for k, v in death_probability(p, tau).items()},
        "notes": (
            "The intensity applies to at-risk time, i.e. outside episodes (unless "
            "risk_during_episodes); with exclude_episode_time: true the counting-process and "
            "count models estimate rate_ratio approximately (time in episodes depends on the "
            "frailty: the crude rate ratio per at-risk day is about 0.516 for a true 0.5 at "
            "frailty variance 0.5), with total time the estimand differs through episode "
            "durations (marginal_rate_ratio). "
            "Marginal means count episodes while alive, E[N(t ∧ D)] with D the time of death, "
            "in the absence of dropout; they are computed by numeric integration over the gamma "
            "frailty and the covariates, not by simulation."
            + (
                " This cohort includes a terminal event (death), so the while-alive marginal "
                "mean differs from the one without death."
                if p.death_rate_per_day > 0
                else ""
            )
        ),
    }


def _arrow_column(col: object, cache: dict) -> object:
    import pyarrow as pa

    if isinstance(col, _Text):
        key = id(col.labels)
        if key not in cache:
            cache[key] = pa.array(col.labels.tolist(), type=pa.string())
        labels = cache[key]
        return labels if col.codes is None else labels.take(pa.array(col.codes))
    if isinstance(col, _Date):
        days = (col.days + (EPOCH - np.datetime64("1970-01-01")).astype(np.int64)).astype(np.int32)
        mask = None if col.missing is None else np.asarray(col.missing, dtype=bool)
        return pa.array(days, type=pa.date32(), mask=mask)
    return pa.array(np.asarray(col))


def _rows(columns: dict[str, object]) -> int:
    first = next(iter(columns.values()))
    if isinstance(first, _Text):
        return int((first.labels if first.codes is None else first.codes).size)
    return int(first.days.size if isinstance(first, _Date) else np.asarray(first).size)


def _write_columns(columns: dict[str, object], path: Path, cache: dict) -> None:
    """Write one table as CSV: dates as YYYY-MM-DD, missing as empty, no quoting, ``\\n`` line
    ends (what pandas' ``to_csv`` writes for these columns). pyarrow's writer, for speed; a table
    whose text would need quoting is written by pandas instead (quoted where needed)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pa.table({k: _arrow_column(c, cache) for k, c in columns.items()})
    try:
        with open(path, "wb") as fh:
            fh.write((",".join(columns) + "\n").encode())
            pacsv.write_csv(
                table, fh, pacsv.WriteOptions(include_header=False, quoting_style="none")
            )
    except pa.ArrowInvalid:
        df = pd.DataFrame({k: _pandas_column(c) for k, c in columns.items()})
        for col in df.columns:
            if np.issubdtype(df[col].dtype, np.datetime64):
                df[col] = df[col].dt.strftime("%Y-%m-%d")
        df.to_csv(path, index=False, lineterminator="\n", na_rep="")


def write_cohort(params: SimulationParams, outdir: str | Path, command: str | None = None) -> None:
    """Simulate and write participants/episodes/pain_scores CSVs and truth.json to `outdir`."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    columns = _simulate(params)
    cache: dict = {}
    for name in TABLES:
        _write_columns(columns[name], outdir / f"{name}.csv", cache)
    reason = columns["participants"]["end_reason"]
    n_reason = np.bincount(reason.codes, minlength=len(END_REASON_LABELS))
    meta = {
        "command": command,
        "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(params).items()},
        "truth": truth(params),
        "counts": {name: _rows(columns[name]) for name in TABLES},
        "end_reasons": {
            label: int(k) for label, k in zip(END_REASON_LABELS, n_reason, strict=True) if k
        },
    }
    (outdir / "truth.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
