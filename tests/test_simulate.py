"""The simulator: deterministic bytes, the contract's format, and recovery of its own truth."""

import json

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from recurstudy.cli import main
from recurstudy.contract import END_REASONS
from recurstudy.derive import counts
from recurstudy.simulate import (
    END_REASON_LABELS,
    PRESETS,
    SimulationParams,
    death_probability,
    marginal_mean,
    simulate_cohort,
    truth,
    write_cohort,
)


def test_same_seed_same_bytes(tmp_path):
    for d in ("a", "b"):
        assert main(["simulate", "--out", str(tmp_path / d), "--n", "120", "--seed", "7"]) == 0
    for name in ("participants.csv", "episodes.csv", "pain_scores.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    meta = json.loads((tmp_path / "a" / "truth.json").read_text())
    other = json.loads((tmp_path / "b" / "truth.json").read_text())
    assert meta["params"] == other["params"] and meta["counts"] == other["counts"]
    assert meta["params"]["n"] == 120 and meta["truth"]["rate_ratio"] == 0.32
    assert "recurstudy simulate" in meta["command"]


def test_shipped_demo_is_reproducible(tmp_path, repo):
    assert main(["simulate", "--preset", "demo", "--out", str(tmp_path)]) == 0
    for name in ("participants.csv", "episodes.csv", "pain_scores.csv"):
        assert (tmp_path / name).read_bytes() == (repo / "data/demo" / name).read_bytes()
    meta = json.loads((repo / "data/demo/truth.json").read_text())
    assert meta["command"] == "recurstudy simulate --preset demo --out data/demo"


def test_contract_shape():
    t = simulate_cohort(SimulationParams(n=400, seed=3))
    p, e, s = t["participants"], t["episodes"], t["pain_scores"]
    assert p["participant_id"].is_unique and set(p["arm"]) == {"control", "intervention"}
    assert (p["arm"] == "control").sum() == 200  # balanced allocation
    m = e.merge(p, on="participant_id")
    assert (m["onset_on"] > m["enrolled_on"]).all() and (m["onset_on"] <= m["followup_end"]).all()
    assert not e.duplicated(["participant_id", "onset_on"]).any()
    res = m["resolved_on"].dropna()
    assert (res >= m.loc[res.index, "onset_on"]).all()
    ms = s.merge(p, on="participant_id")
    assert (ms["assessed_on"] >= ms["enrolled_on"]).all()
    assert (ms["assessed_on"] <= ms["followup_end"]).all()
    assert s["nrs"].between(0, 10).all()
    weeks = ((ms["assessed_on"] - ms["enrolled_on"]).dt.days // 7).unique()
    assert set(weeks) <= {0, 2, 4, 6, 12, 26}


def test_recovers_rate_ratio_and_dropout():
    """On 20,000 participants the Poisson rate ratio (robust SE) is within 4 SE of the truth.
    Risk over total time (a Poisson process given the frailty) with total follow-up as exposure,
    where rate_ratio is the crude estimator's exact target."""
    params = SimulationParams(n=20000, seed=11, risk_during_episodes=True)
    t = simulate_cohort(params)
    config = {
        "arms": {"control": "control", "intervention": "intervention"},
        "covariates": {},
        "exclude_episode_time": False,
    }
    c = counts(t["participants"], t["episodes"], config)
    c = c[c["exposure_days"] > 0]
    X = sm.add_constant((c["arm"] == "intervention").astype(float).to_numpy())
    fit = sm.GLM(
        c["n_episodes"].to_numpy(),
        X,
        family=sm.families.Poisson(),
        offset=np.log(c["exposure_days"].to_numpy()),
    ).fit(cov_type="HC0")
    est, se = fit.params[1], fit.bse[1]
    assert abs(est - np.log(params.rate_ratio)) < 4 * se, (np.exp(est), se)
    assert se < 0.03  # the check has teeth: a 10% error in the rate ratio would fail it
    dropped = (t["participants"]["end_reason"] != "completed").mean()
    assert abs(dropped - params.dropout) < 4 * np.sqrt(0.1 * 0.9 / params.n)


def test_truth_records_estimands():
    tr = truth(SimulationParams())
    assert tr["rate_reduction"] == 0.68 and tr["negbin_theta"] == 2.0
    assert tr["pain_reduction_at_week_6"] == {"control": 0.30, "intervention": 0.82}


def _crude(n_ep: np.ndarray, days: np.ndarray) -> tuple[float, float]:
    """Crude rate sum(N) / sum(T) and the robust SE of its log (participants as clusters)."""
    rate = n_ep.sum() / days.sum()
    return float(rate), float(np.sqrt(np.sum((n_ep - rate * days) ** 2)) / n_ep.sum())


def test_informative_dropout_concentrates_in_the_episode_prone():
    """dropout_frailty_link = 2: the same follow-up lengths (same share leaving early) go
    preferentially to high-frailty participants, so those who leave have a much higher episode
    rate than completers (equal rates without the link). As expected when dropout depends on the
    frailty alone: each arm's crude rate falls below its true marginal rate (the episode-prone
    contribute less time), while the crude rate ratio stays at the truth (randomisation
    balances the frailty, so both arms lose the same share). Tolerances: 3 robust SEs."""
    common = dict(
        n=4000,
        seed=5,
        dropout=0.3,
        frailty_var=1.0,
        rate_ratio=0.5,
        beta_age_per_10y=0.0,
        beta_prior_episode=0.0,
        beta_baseline_pain=0.0,
        risk_during_episodes=True,  # a Poisson process given the frailty, over total time
    )
    out = {}
    for link in (0.0, 2.0):
        p = SimulationParams(**common, dropout_frailty_link=link)
        t = simulate_cohort(p)
        pa, ep = t["participants"], t["episodes"]
        days = (pa["followup_end"] - pa["enrolled_on"]).dt.days.to_numpy()
        n_ep = ep.groupby("participant_id").size().reindex(pa["participant_id"], fill_value=0)
        n_ep = n_ep.to_numpy()
        left = days < p.followup_days
        assert np.array_equal(left, (pa["end_reason"] != "completed").to_numpy())
        ctrl = (pa["arm"] == "control").to_numpy()
        out[link] = {
            "days": np.sort(days),
            "left_vs_completed": _crude(n_ep[left], days[left]),
            "completed": _crude(n_ep[~left], days[~left]),
            "control": _crude(n_ep[ctrl], days[ctrl]),
            "intervention": _crude(n_ep[~ctrl], days[~ctrl]),
        }
        assert truth(p)["dropout_frailty_link"] == link
    assert np.array_equal(out[0.0]["days"], out[2.0]["days"])  # follow-up distribution kept

    def log_ratio(a, b):
        return np.log(a[0] / b[0]), np.hypot(a[1], b[1])

    lr0, se0 = log_ratio(out[0.0]["left_vs_completed"], out[0.0]["completed"])
    lr2, se2 = log_ratio(out[2.0]["left_vs_completed"], out[2.0]["completed"])
    assert abs(lr0) < 3 * se0, (lr0, se0)
    assert lr2 > np.log(1.5) + 3 * se2, (lr2, se2)  # leavers: over 1.5 times the rate
    for link in (0.0, 2.0):
        rate, se = out[link]["control"]
        z = (np.log(rate) - np.log(0.02)) / se
        assert (abs(z) < 3) if link == 0 else (z < -3), (link, rate, se)
        lr, se_lr = log_ratio(out[link]["intervention"], out[link]["control"])
        assert abs(lr - np.log(0.5)) < 3 * se_lr, (link, np.exp(lr), se_lr)


# --- Speed rewrite, terminal event and episode-linked dropout -----------------------------------

NO_COVARIATES = dict(beta_age_per_10y=0.0, beta_prior_episode=0.0, beta_baseline_pain=0.0)


def _episode_counts(t, days=None):
    """Episodes per participant (onset within `days` of enrolment when given), in table order."""
    pa, ep = t["participants"], t["episodes"]
    if days is not None:
        enrol = ep["participant_id"].map(pa.set_index("participant_id")["enrolled_on"])
        ep = ep[(ep["onset_on"] - enrol).dt.days <= days]
    n = ep.groupby("participant_id").size().reindex(pa["participant_id"], fill_value=0)
    return n.to_numpy()


def test_csv_bytes_are_pandas_format(tmp_path):
    """The Arrow writer gives the bytes pandas' to_csv gives (dates YYYY-MM-DD, empty for a
    missing resolution, no quoting): the fast path changes speed, not format."""
    p = SimulationParams(n=400, seed=8, death_rate_per_day=0.002, dropout_episode_link=0.3)
    write_cohort(p, tmp_path)
    for name, df in simulate_cohort(p).items():
        out = df.copy()
        for col in out.columns:
            if np.issubdtype(out[col].dtype, np.datetime64):
                out[col] = out[col].dt.strftime("%Y-%m-%d")
        expected = out.to_csv(index=False, lineterminator="\n", na_rep="").encode()
        assert (tmp_path / f"{name}.csv").read_bytes() == expected, name
    meta = json.loads((tmp_path / "truth.json").read_text())
    assert sum(meta["end_reasons"].values()) == 400
    assert set(meta["end_reasons"]) <= set(END_REASONS)


def test_deterministic_with_every_mechanism():
    p = SimulationParams(
        n=500,
        seed=4,
        death_rate_per_day=0.003,
        death_frailty_link=1.0,
        death_rate_ratio=0.5,
        dropout_episode_link=0.5,
        dropout_frailty_link=1.0,
    )
    a, b = simulate_cohort(p), simulate_cohort(p)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])
    assert set(END_REASON_LABELS) <= set(END_REASONS)


def test_bad_parameters_are_named(tmp_path, capsys):
    with pytest.raises(ValueError, match="death_rate_per_day"):
        simulate_cohort(SimulationParams(death_rate_per_day=-1.0))
    with pytest.raises(ValueError, match="dropout must be in"):
        simulate_cohort(SimulationParams(dropout=1.5))
    assert main(["simulate", "--out", str(tmp_path), "--dropout", "2"]) == 2
    assert "dropout must be in [0, 1]" in capsys.readouterr().err


@pytest.mark.parametrize(("link", "ratio"), [(0.0, 1.0), (1.0, 0.5)])
def test_deaths_at_the_stated_rate(link, ratio):
    """Without dropout, the share dying by the planned end in each arm is the closed form within
    4 binomial SEs: ``1 - exp(-d tau)`` without a frailty link, and with ``link = 1`` the gamma
    frailty's Laplace transform ``1 - (1 + v d r tau)**(-1/v)`` (``r`` the arm's death rate
    ratio). :func:`death_probability` (quadrature) equals the closed forms to 1e-10."""
    d, v, tau = 0.001, 0.5, 182
    p = SimulationParams(
        n=40000,
        seed=21,
        dropout=0.0,
        frailty_var=v,
        death_rate_per_day=d,
        death_frailty_link=link,
        death_rate_ratio=ratio,
    )
    t = simulate_cohort(p)
    pa = t["participants"]
    quad = death_probability(p, tau)
    for role, r in (("control", 1.0), ("intervention", ratio)):
        exact = 1 - np.exp(-d * r * tau) if link == 0 else 1 - (1 + v * d * r * tau) ** (-1 / v)
        assert abs(quad[role] - exact) < 1e-10
        arm = pa[pa["arm"] == role]
        died = (arm["end_reason"] == "death").to_numpy()
        se = np.sqrt(exact * (1 - exact) / len(arm))
        assert abs(died.mean() - exact) < 4 * se, (role, died.mean(), exact, se)
        days = (arm["followup_end"] - arm["enrolled_on"]).dt.days.to_numpy()
        assert (days[died] <= tau).all() and (days[~died] == tau).all()
    assert set(pa["end_reason"]) == {"completed", "death"}


def test_death_only_cuts_the_episode_process():
    """Same seed with and without deaths: the episode process is the same and death only cuts
    it. Survivors keep every episode; a participant who died keeps exactly the episodes before
    the day of death (an onset on that day may precede it) and has none after, and no pain
    score after it. Dropout is off, so a cut is a death."""
    base = dict(n=3000, seed=6, dropout=0.0)
    alive = simulate_cohort(SimulationParams(**base))
    dead = simulate_cohort(SimulationParams(**base, death_rate_per_day=0.004, death_frailty_link=1))
    pa = dead["participants"].set_index("participant_id")
    died = pa.index[pa["end_reason"] == "death"]
    assert 0.3 < len(died) / len(pa) < 0.7
    ea, ed = alive["episodes"], dead["episodes"]
    survivors = ~ea["participant_id"].isin(died)
    pd.testing.assert_frame_equal(
        ea[survivors].reset_index(drop=True),
        ed[~ed["participant_id"].isin(died)].reset_index(drop=True),
    )
    end = ed["participant_id"].map(pa["followup_end"])
    assert (ed["onset_on"] <= end).all()
    a_end = ea["participant_id"].map(pa["followup_end"])
    before = ea[~survivors & (ea["onset_on"] < a_end)][["participant_id", "onset_on"]]
    kept = ed[ed["participant_id"].isin(died)][["participant_id", "onset_on"]]
    merged = before.merge(kept, how="left", indicator=True)
    assert (merged["_merge"] == "both").all()  # every episode before the death day is kept
    assert len(kept) - len(before) <= len(died)  # beyond those, at most one on the death day
    ps = dead["pain_scores"]
    assert (ps["assessed_on"] <= ps["participant_id"].map(pa["followup_end"])).all()


def _dropout_by_episodes(p: SimulationParams, t) -> tuple[np.ndarray, np.ndarray]:
    """Poisson regression of withdrawal on the number of episodes had so far, with the baseline
    cumulative dropout hazard ``H0(t) = -log(1 - p t / (F - 1))`` as offset: follow-up split at
    each onset (onsets and withdrawals placed mid-day). Returns (estimates, SEs) of
    (log baseline multiplier, log hazard ratio per episode)."""
    pa, ep = t["participants"], t["episodes"]
    n = len(pa)
    fu = (pa["followup_end"] - pa["enrolled_on"]).dt.days.to_numpy()
    withdrawn = (pa["end_reason"] == "withdrawn").to_numpy()
    pid = pd.Index(pa["participant_id"]).get_indexer(ep["participant_id"])
    day = (ep["onset_on"].to_numpy() - pa["enrolled_on"].to_numpy()[pid]) // np.timedelta64(1, "D")
    span = p.followup_days - 1

    def big_h(x):
        return -np.log1p(-p.dropout * np.minimum(x, span) / span)

    counts = np.bincount(pid, minlength=n)
    starts = np.cumsum(counts) - counts
    k = np.arange(pid.size) - starts[pid]
    onset = day - 0.5
    prev = np.where(k > 0, np.concatenate([[0.0], onset[:-1]]), 0.0)
    end = np.where(withdrawn, fu - 0.5, fu).astype(float)
    last = np.zeros(n)
    has = counts > 0
    last[has] = onset[starts[has] + counts[has] - 1]
    k_all = np.concatenate([k, counts]).astype(float)
    expo = np.concatenate([big_h(onset) - big_h(prev), big_h(end) - big_h(np.minimum(last, end))])
    event = np.concatenate([np.zeros(k.size), withdrawn.astype(float)])
    ok = expo > 0
    fit = sm.GLM(
        event[ok], sm.add_constant(k_all[ok]), family=sm.families.Poisson(), offset=np.log(expo[ok])
    ).fit()
    return fit.params, fit.bse


def test_dropout_rises_with_episodes():
    """dropout_episode_link = log 1.5: each episode had so far multiplies the dropout hazard by
    1.5. The Poisson regression of withdrawal on episodes so far recovers it within 4 SEs (SE
    about 0.005; the mid-day placement of day-level times costs about 1 SE), and its baseline
    within 4 SEs of 1 (the hazard under which `dropout` leave at a uniform time). All leavers
    are `withdrawn`, and far more leave than the 30% of the non-informative case."""
    g = np.log(1.5)
    p = SimulationParams(n=20000, seed=1, dropout=0.3, dropout_episode_link=g)
    t = simulate_cohort(p)
    est, se = _dropout_by_episodes(p, t)
    assert abs(est[1] - g) < 4 * se[1], (est, se)
    assert abs(est[0]) < 4 * se[0], (est, se)
    assert se[1] < 0.01
    reasons = t["participants"]["end_reason"]
    assert set(reasons) == {"completed", "withdrawn"} and (reasons == "withdrawn").mean() > 0.4


def test_episode_linked_dropout_without_link_is_the_uniform_dropout():
    """A vanishing episode link: the hazard mechanism gives `dropout` leaving (within 4 binomial
    SEs) at days spread evenly over the follow-up (each third of it within 4 SEs of a third)."""
    n, share = 20000, 0.3
    t = simulate_cohort(SimulationParams(n=n, seed=2, dropout=share, dropout_episode_link=1e-12))
    pa = t["participants"]
    left = (pa["end_reason"] == "withdrawn").to_numpy()
    assert abs(left.mean() - share) < 4 * np.sqrt(share * (1 - share) / n)
    days = (pa["followup_end"] - pa["enrolled_on"]).dt.days.to_numpy()[left]
    thirds = np.bincount(np.minimum((days - 1) * 3 // 181, 2), minlength=3) / left.sum()
    assert np.all(np.abs(thirds - 1 / 3) < 4 * np.sqrt(2 / 9 / left.sum())), thirds


def test_marginal_mean_closed_form_poisson_case():
    """With risk over total time (a Poisson process given the frailty), no covariate effects and
    death hazard d Z: ``E[N(t ∧ D)] = (r / d) (1 - (1 + v d t)**(-1/v))`` exactly (gamma Laplace
    transform); without death ``r t``. The quadrature matches to 1e-9 relative."""
    v, d, r = 0.5, 0.003, 0.02
    p = SimulationParams(
        frailty_var=v,
        rate_per_day=r,
        rate_ratio=0.5,
        death_rate_per_day=d,
        death_frailty_link=1.0,
        death_rate_ratio=2.0,
        risk_during_episodes=True,
        **NO_COVARIATES,
    )
    times = np.array([10.0, 91.0, 182.0])
    mm = marginal_mean(p, times)
    for role, rr, dr in (("control", 1.0, 1.0), ("intervention", 0.5, 2.0)):
        exact = r * rr / (d * dr) * (1 - (1 + v * d * dr * times) ** (-1 / v))
        np.testing.assert_allclose(mm[role], exact, rtol=1e-9)
    np.testing.assert_allclose(marginal_mean(p, times, with_death=False)["control"], r * times)


def test_marginal_mean_quadrature_converged():
    """The demo's truth with finer quadrature (twice the frailty nodes, four times the rate grid,
    a quarter of the covariate bin width) agrees to 1e-6 relative: the recorded digits are not
    quadrature noise."""
    p = SimulationParams(**PRESETS["demo"])
    times = np.array([30.0, 91.0, 182.0])
    a = marginal_mean(p, times)
    b = marginal_mean(p, times, frailty_nodes=128, grid=1024, bin_width=0.005)
    for role in a:
        np.testing.assert_allclose(a[role], b[role], rtol=1e-6)


@pytest.mark.parametrize("overlap", [False, True])
def test_truth_marginal_mean_matches_a_large_simulation(overlap):
    """truth.json's while-alive marginal mean (numeric integration) against the mean number of
    episodes before death and by day t in 100,000 simulated participants without dropout (the
    demo's frailty, covariates and terminal event, the latter raised to make it matter), per arm
    at days 91 and 182: within 4 Monte Carlo SEs (about 0.3% of the mean at 182 days). Both
    risk-set settings (time in an episode not at risk, the demo's; and the Poisson case)."""
    p = SimulationParams(
        **{**PRESETS["demo"], "death_rate_per_day": 0.002},
        n=100000,
        seed=31,
        dropout=0.0,
        risk_during_episodes=overlap,
    )
    tr = truth(p)
    t = simulate_cohort(p)
    arms = t["participants"]["arm"].to_numpy()
    assert (t["participants"]["end_reason"] == "death").mean() > 0.2
    for day in (91, 182):
        n_ep = _episode_counts(t, day)
        col = tr["times"].index(float(day))
        for role in ("control", "intervention"):
            x = n_ep[arms == role]
            se = x.std(ddof=1) / np.sqrt(x.size)
            true = tr["marginal_mean_while_alive"][role][col]
            assert abs(x.mean() - true) < 4 * se, (day, role, x.mean(), true, se)
    alive, nodeath = tr["marginal_mean_while_alive"], tr["marginal_mean_no_death"]
    assert alive["control"][-1] < 0.9 * nodeath["control"][-1]  # deaths matter here


def test_truth_records_the_intercurrent_event_parameters():
    p = SimulationParams(**PRESETS["demo"])
    tr = truth(p)
    assert tr["conditional_rate_ratio"] == 0.32 and tr["tau_days"] == 182.0
    assert tr["death_rate_per_day"] == PRESETS["demo"]["death_rate_per_day"] > 0
    assert tr["times"][0] == 0.0 and tr["times"][-1] == 182.0
    alive = tr["marginal_mean_while_alive"]
    ratio = alive["intervention"][-1] / alive["control"][-1]
    assert abs(tr["marginal_mean_ratio_while_alive"] - ratio) < 1e-10
    # time in an episode is not at risk: the calendar-time ratio lies a little above 0.32
    assert 0.32 < tr["marginal_rate_ratio"] < 0.4
    assert 0.01 < tr["death_probability_by_tau"]["control"] < 0.1
