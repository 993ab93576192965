"""Simulate a cohort in the data contract's format, with a known truth.

Generative model (all times in days from enrolment):
- participants are randomised 1:1 (a random permutation of a balanced allocation);
- covariates: age, sex, baseline pain (NRS), prior episodes;
- planned follow-up `followup_days`; a fraction `dropout` leaves at a uniform time before that;
  with `dropout_frailty_link` (``k``, default 0: dropout unrelated to the frailty) dropout is
  informative: the follow-up lengths drawn above are reassigned among participants in the order
  of latent dropout times ``E / frailty**k`` (``E`` standard exponential, from a separate random
  stream), i.e. a dropout hazard proportional to ``frailty**k``. The distribution of follow-up
  and the share leaving early are unchanged; who leaves early is not (the episode-prone leave
  first when ``k > 0``). With ``frailty_var = 0`` it has no effect;
- episodes form a recurrent-event process whose intensity while at risk is
  ``rate * rr**arm * exp(x'beta) * frailty`` with a gamma frailty of mean 1 and variance
  `frailty_var` (overdispersion). After an episode's onset the participant is in the episode
  until it resolves (a gamma-distributed duration) and at risk again from the day it resolved
  (plus `washout_days`); with `risk_during_episodes` the intensity applies over total time
  instead (episodes may overlap), which is what models without `exclude_episode_time` assume.
  Onset days are the ceiling of the continuous onset times (so day >= 1, i.e. after enrolment);
- pain scores at the scheduled weeks: baseline pain reduced by a fraction that grows linearly
  to the arm's `pain_reduction` at week 6 and stays there, plus participant-level random
  intercept and slope and visit noise, rounded to 0..10.

The same seed and parameters give the same bytes: a single numpy Generator draws everything in a
fixed order, and the CSVs are written with fixed formatting.
"""

from __future__ import annotations

import json
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
    # (0: dropout unrelated to the frailty, today's behaviour). See the module docstring.
    dropout_frailty_link: float = 0.0


PRESETS: dict[str, dict] = {"demo": {}}


def _centre_age(age: np.ndarray) -> np.ndarray:
    return (age - 25.0) / 10.0


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
    planned = p.followup_days if p.followup_sample is None else max(p.followup_sample)
    return out, out < planned


def simulate_cohort(params: SimulationParams) -> dict[str, pd.DataFrame]:
    """Return the participants, episodes and pain_scores tables of one simulated cohort."""
    p = params
    rng = np.random.default_rng(p.seed)
    n = p.n
    width = max(4, len(str(n)))
    ids = np.char.add("P", np.char.zfill(np.arange(1, n + 1).astype(str), width))

    if p.allocation == 0.5:
        arm = rng.permutation(np.arange(n) % 2)  # 0 control, 1 intervention; balanced
    else:
        arm = rng.permutation((np.arange(n) < round(n * p.allocation)).astype(int))
    enrol = rng.integers(0, p.enrol_window_days, n)
    age = np.clip(np.round(rng.normal(26.0, 6.0, n)), 16, 60).astype(int)
    sex = np.where(rng.random(n) < 0.45, "F", "M")
    baseline_pain = rng.normal(PAIN_BASELINE_MEAN, PAIN_BASELINE_SD, n)
    baseline_pain = np.clip(np.round(baseline_pain), 0, 10).astype(int)
    prior = rng.poisson(1.5, n)

    leaves = rng.random(n) < p.dropout
    leave_day = rng.integers(1, p.followup_days, n)
    fu_days = np.where(leaves, leave_day, p.followup_days)
    if p.followup_sample is not None:
        fu_days = rng.choice(np.asarray(p.followup_sample, dtype=int), n)
    u_reason = rng.random(n)
    reason = np.where(
        leaves, np.where(u_reason < 0.5, "withdrawn", "lost_to_followup"), "completed"
    )

    if p.frailty_var > 0:
        frailty = rng.gamma(1.0 / p.frailty_var, p.frailty_var, n)
    else:
        frailty = np.ones(n)
    if p.dropout_frailty_link != 0 and p.frailty_var > 0:
        fu_days, leaves = _informative_followup(p, fu_days, frailty)
        reason = np.where(
            leaves, np.where(u_reason < 0.5, "withdrawn", "lost_to_followup"), "completed"
        )
    linpred = (
        p.beta_age_per_10y * _centre_age(age)
        + p.beta_prior_episode * (prior - 1.5)
        + p.beta_baseline_pain * (baseline_pain - 5.5)
    )
    intensity = p.rate_per_day * np.where(arm == 1, p.rate_ratio, 1.0) * np.exp(linpred) * frailty

    # Recurrent episodes, vectorised over participants: draw k gaps and durations per person,
    # doubling k until every person's process has passed the end of their follow-up.
    k = max(8, int(np.ceil(np.max(intensity) * p.followup_days * 2)))
    while True:
        gaps = rng.exponential(1.0, (n, k)) / intensity[:, None]
        durs = rng.gamma(2.0, p.episode_mean_days / 2.0, (n, k))
        # onset_j = ceil-day of (resolution day of episode j-1) + gap_j; resolution day = ceil.
        onset_day = np.empty((n, k))
        resolved_day = np.empty((n, k))
        at_risk_from = np.zeros(n)
        last_onset = np.zeros(n)
        for j in range(k):  # loop over episode number, vectorised over participants
            t_on = at_risk_from + gaps[:, j]
            # one onset per day at most (the contract's episodes are days)
            onset_day[:, j] = np.maximum(np.ceil(t_on), last_onset + 1)
            last_onset = onset_day[:, j]
            resolved_day[:, j] = np.ceil(t_on + durs[:, j])
            if p.risk_during_episodes:
                at_risk_from = t_on  # a Poisson process (given the frailty) over total time
            else:
                at_risk_from = resolved_day[:, j] + p.washout_days
        if np.all(onset_day[:, -1] > fu_days):
            break
        k *= 2
    keep = onset_day <= fu_days[:, None]
    pid_idx, _ = np.nonzero(keep)
    on = onset_day[keep].astype(int)
    res = resolved_day[keep].astype(int)
    unresolved = res > fu_days[pid_idx]
    severity = np.clip(np.round(rng.normal(6.0, 1.5, on.size)), 0, 10).astype(int)

    day = np.timedelta64(1, "D")
    enrol_date = EPOCH + enrol * day
    participants = pd.DataFrame(
        {
            ID: ids,
            ARM: np.asarray(p.arms)[arm],
            "enrolled_on": enrol_date,
            "followup_end": enrol_date + fu_days * day,
            "site": np.char.add("site_", np.asarray(list("ABCD"))[rng.integers(0, 4, n)]),
            "end_reason": reason,
            "age": age,
            "sex": sex,
            "baseline_pain": baseline_pain,
            "prior_episodes": prior,
        }
    )
    resolved = pd.Series(enrol_date[pid_idx] + res * day).where(~unresolved)
    episodes = pd.DataFrame(
        {
            ID: ids[pid_idx],
            "onset_on": enrol_date[pid_idx] + on * day,
            "resolved_on": resolved.to_numpy(),
            "severity": severity,
        }
    )

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
    nrs = np.clip(np.round(nrs), 0, 10).astype(int)
    seen = vdays[None, :] <= fu_days[:, None]
    pi, vi = np.nonzero(seen)
    pain_scores = pd.DataFrame(
        {
            ID: ids[pi],
            "assessed_on": enrol_date[pi] + vdays[vi] * day,
            "nrs": nrs[pi, vi],
        }
    )
    return dict(zip(TABLES, (participants, episodes, pain_scores), strict=True))


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


def truth(params: SimulationParams) -> dict:
    """The known truth of a simulated cohort, for recovery tests and the demo's truth.json."""
    return {
        "rate_ratio": params.rate_ratio,
        "rate_reduction": round(1.0 - params.rate_ratio, 12),
        "log_rate_ratio": float(np.log(params.rate_ratio)),
        "control_rate_per_day": params.rate_per_day,
        "frailty_variance": params.frailty_var,
        "negbin_theta": (1.0 / params.frailty_var) if params.frailty_var > 0 else None,
        "covariate_log_rate_ratios": {
            "age_per_10_years_from_25": params.beta_age_per_10y,
            "prior_episodes_per_episode": params.beta_prior_episode,
            "baseline_pain_per_point": params.beta_baseline_pain,
        },
        "pain_reduction_at_week_6": dict(params.pain_reduction),
        "dropout_frailty_link": params.dropout_frailty_link,
        "notes": (
            "The intensity applies to at-risk time, i.e. outside episodes; with "
            "exclude_episode_time: true the counting-process models estimate rate_ratio "
            "directly, with total time the estimand differs only through episode durations."
        ),
    }


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    out = df.copy()
    for col in out.columns:
        if np.issubdtype(out[col].dtype, np.datetime64):
            out[col] = out[col].dt.strftime("%Y-%m-%d")
    out.to_csv(path, index=False, lineterminator="\n", na_rep="")


def write_cohort(params: SimulationParams, outdir: str | Path, command: str | None = None) -> None:
    """Simulate and write participants/episodes/pain_scores CSVs and truth.json to `outdir`."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    tables = simulate_cohort(params)
    for name, df in tables.items():
        _write_csv(df, outdir / f"{name}.csv")
    meta = {
        "command": command,
        "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(params).items()},
        "truth": truth(params),
        "counts": {name: int(len(df)) for name, df in tables.items()},
    }
    (outdir / "truth.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
