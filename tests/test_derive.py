"""Derivations checked against small cohorts worked by hand."""

import numpy as np
import pandas as pd
import pytest

from recurstudy.derive import counting_process, counts, derive_all, first_episode

CONFIG = {
    "arms": {"control": "control", "intervention": "intervention"},
    "covariates": {"age": "numeric"},
}


def _d(s):
    return pd.Timestamp(s)


@pytest.fixture
def cohort():
    # A: 30 days, episodes on day 10 (resolved day 12) and day 30 = the last follow-up day.
    # B: 20 days, no episode.  C: withdrew on day 14, episodes on day 3 (resolved day 5) and
    # day 8 (unresolved).  D: withdrew on the day of enrolment (no time at risk).
    participants = pd.DataFrame(
        {
            "participant_id": ["A", "B", "C", "D"],
            "arm": ["control", "intervention", "control", "intervention"],
            "enrolled_on": [_d("2025-01-01"), _d("2025-01-01"), _d("2025-02-01"), _d("2025-03-01")],
            "followup_end": [
                _d("2025-01-31"),
                _d("2025-01-21"),
                _d("2025-02-15"),
                _d("2025-03-01"),
            ],
            "age": [30, 40, 50, 60],
        }
    )
    episodes = pd.DataFrame(
        {
            "participant_id": ["C", "A", "A", "C"],  # deliberately unsorted
            "onset_on": [_d("2025-02-09"), _d("2025-01-31"), _d("2025-01-11"), _d("2025-02-04")],
            "resolved_on": [pd.NaT, _d("2025-01-31"), _d("2025-01-13"), _d("2025-02-06")],
        }
    )
    return participants, episodes


def _rows(cp, pid):
    sub = cp[cp["participant_id"] == pid]
    return [
        tuple(int(v) for v in r) for r in sub[["episode", "start", "stop", "gap", "event"]].values
    ]


def test_counting_process_total_time(cohort):
    cp = counting_process(*cohort, CONFIG)
    assert _rows(cp, "A") == [(1, 0, 10, 10, 1), (2, 10, 30, 20, 1)]  # no empty tail after day 30
    assert _rows(cp, "B") == [(1, 0, 20, 20, 0)]
    assert _rows(cp, "C") == [(1, 0, 3, 3, 1), (2, 3, 8, 5, 1), (3, 8, 14, 6, 0)]
    assert _rows(cp, "D") == []  # zero follow-up: no interval
    assert list(cp.columns[:3]) == ["participant_id", "arm", "age"]
    assert list(cp["arm"].cat.categories) == ["control", "intervention"]
    assert (cp["stop"] > cp["start"]).all()


def test_counting_process_excluding_episode_time(cohort):
    cp = counting_process(*cohort, {**CONFIG, "exclude_episode_time": True})
    assert _rows(cp, "A") == [(1, 0, 10, 10, 1), (2, 12, 30, 18, 1)]
    # C's second episode never resolves: no time at risk after it.
    assert _rows(cp, "C") == [(1, 0, 3, 3, 1), (2, 5, 8, 3, 1)]
    assert _rows(cp, "B") == [(1, 0, 20, 20, 0)]


def test_overlapping_episode_keeps_one_day_at_risk():
    participants = pd.DataFrame(
        {
            "participant_id": ["E"],
            "arm": ["control"],
            "enrolled_on": [_d("2025-01-01")],
            "followup_end": [_d("2025-01-31")],
            "age": [30],
        }
    )
    episodes = pd.DataFrame(
        {
            "participant_id": ["E", "E"],
            "onset_on": [_d("2025-01-06"), _d("2025-01-09")],
            "resolved_on": [_d("2025-01-20"), _d("2025-01-10")],
        }
    )
    cp = counting_process(participants, episodes, {**CONFIG, "exclude_episode_time": True})
    assert _rows(cp, "E") == [(1, 0, 5, 5, 1), (2, 7, 8, 1, 1), (3, 9, 30, 21, 0)]


def test_first_episode(cohort):
    fe = first_episode(*cohort, CONFIG).set_index("participant_id")
    assert fe.loc["A", ["time", "event"]].tolist() == [10, 1]
    assert fe.loc["B", ["time", "event"]].tolist() == [20, 0]
    assert fe.loc["C", ["time", "event"]].tolist() == [3, 1]
    assert fe.loc["D", ["time", "event"]].tolist() == [0, 0]


def test_counts_and_exposure(cohort):
    c = counts(*cohort, CONFIG).set_index("participant_id")
    assert c["n_episodes"].to_dict() == {"A": 2, "B": 0, "C": 2, "D": 0}
    assert c["exposure_days"].to_dict() == {"A": 30, "B": 20, "C": 14, "D": 0}
    cx = counts(*cohort, {**CONFIG, "exclude_episode_time": True}).set_index("participant_id")
    assert cx["exposure_days"].to_dict() == {"A": 28, "B": 20, "C": 6, "D": 0}


def test_counts_agree_with_counting_process_on_demo(repo):
    p = pd.read_csv(
        repo / "data/demo/participants.csv", parse_dates=["enrolled_on", "followup_end"]
    )
    e = pd.read_csv(repo / "data/demo/episodes.csv", parse_dates=["onset_on", "resolved_on"])
    d = derive_all(p, e, CONFIG)
    cp, c = d["counting_process"], d["counts"]
    assert cp["event"].sum() == len(e) == c["n_episodes"].sum()
    fu = (p["followup_end"] - p["enrolled_on"]).dt.days
    assert c["exposure_days"].sum() == fu.sum() == cp["gap"].sum()
    # one row per episode plus a censored tail unless the last episode fell on the last day
    assert len(cp) == len(e) + int((cp.groupby("participant_id")["event"].last() == 0).sum())
    assert np.array_equal(d["first_episode"]["participant_id"], np.sort(p["participant_id"]))


# ---------------------------------------------------------------------------------------------
# Episodes under way at enrolment and washout, on cohorts worked by hand (days since enrolment)
# ---------------------------------------------------------------------------------------------

DAY0 = pd.Timestamp("2025-01-01")


def _cohort(rows: dict[str, tuple[int, list[tuple[int, int | None]]]]):
    """participants and episodes from {id: (follow-up days, [(onset day, resolved day)])}."""
    ids = list(rows)
    participants = pd.DataFrame(
        {
            "participant_id": ids,
            "arm": ["control", "intervention"] * (len(ids) // 2) + ["control"] * (len(ids) % 2),
            "enrolled_on": DAY0,
            "followup_end": [DAY0 + pd.Timedelta(days=rows[i][0]) for i in ids],
            "age": 30.0,
        }
    )
    ep = [
        (pid, DAY0 + pd.Timedelta(days=o), pd.NaT if r is None else DAY0 + pd.Timedelta(days=r))
        for pid, (_, eps) in rows.items()
        for o, r in eps
    ]
    episodes = pd.DataFrame(ep, columns=["participant_id", "onset_on", "resolved_on"])
    return participants, episodes.astype(
        {"onset_on": "datetime64[ns]", "resolved_on": "datetime64[ns]"}
    )


# P: an episode under way at enrolment (day -7 to day 4), then episodes on days 10 (to 12) and
# 20 (to 21), followed 30 days.
PREVALENT = {"P": (30, [(-7, 4), (10, 12), (20, 21)])}


@pytest.mark.parametrize(
    ("extra", "rows", "entry", "exposure"),
    [
        # the prevalent episode is never an event and never at risk, whatever the settings
        ({}, [(1, 4, 10, 1), (2, 10, 20, 1), (3, 20, 30, 0)], 4, 26),
        (
            {"exclude_episode_time": True},
            [(1, 4, 10, 1), (2, 12, 20, 1), (3, 21, 30, 0)],
            4,
            23,
        ),
        ({"washout_days": 3}, [(1, 7, 10, 1), (2, 15, 20, 1), (3, 24, 30, 0)], 7, 14),
    ],
)
def test_episode_under_way_at_enrolment(extra, rows, entry, exposure):
    p, e = _cohort(PREVALENT)
    config = {**CONFIG, **extra}
    d = derive_all(p, e, config)
    got = [(k, s, t, ev) for k, s, t, _, ev in _rows(d["counting_process"], "P")]
    assert got == rows
    fe = d["first_episode"].set_index("participant_id").loc["P"]
    assert (fe["entry"], fe["time"], fe["event"]) == (entry, 10, 1)
    c = d["counts"].set_index("participant_id").loc["P"]
    assert (c["n_episodes"], c["exposure_days"]) == (2, exposure)


def test_followup_ending_inside_a_washout_simply_ends():
    # Q: episode on day 10 resolving on day 15; follow-up ends on day 20.
    p, e = _cohort({"Q": (20, [(10, 15)])})
    for washout, tail in [(4, [(2, 19, 20, 1, 0)]), (5, []), (6, []), (30, [])]:
        cp = counting_process(p, e, {**CONFIG, "washout_days": washout})
        assert _rows(cp, "Q") == [(1, 0, 10, 10, 1), *tail], washout
        exposure = counts(p, e, {**CONFIG, "washout_days": washout})["exposure_days"].iloc[0]
        assert exposure == 10 + sum(r[3] for r in tail)


def test_episode_inside_a_washout_keeps_one_day_at_risk():
    # R: episode days 5-8; the washout (6 days) covers days 9-14, at risk again from day 15.
    # An onset on day 12 or 14 (inside the washout) keeps one day at risk; day 15 does not need
    # to; then the next episode's own washout.
    base = [(5, 8)]
    for onset, second in [(12, (11, 12)), (14, (13, 14)), (15, (14, 15)), (20, (14, 20))]:
        p, e = _cohort({"R": (40, [*base, (onset, onset + 1)])})
        cp = counting_process(p, e, {**CONFIG, "washout_days": 6})
        tail_start = onset + 1 + 6
        assert _rows(cp, "R") == [
            (1, 0, 5, 5, 1),
            (2, *second, second[1] - second[0], 1),
            (3, tail_start, 40, 40 - tail_start, 0),
        ], onset


def test_overlapping_episodes_with_washout():
    # S: episode days 5-20 and, inside it, 8-9; washout 2. As without washout, the next interval
    # starts from the previous episode (by onset): (9 + 2, 30].
    p, e = _cohort({"S": (30, [(5, 20), (8, 9)])})
    cp = counting_process(p, e, {**CONFIG, "washout_days": 2})
    assert _rows(cp, "S") == [(1, 0, 5, 5, 1), (2, 7, 8, 1, 1), (3, 11, 30, 19, 0)]


def test_never_at_risk_after_an_episode_under_way_at_enrolment():
    # T: under way at enrolment until day 25, follow-up 28 days, washout 6: never at risk.
    # U: under way at enrolment and unresolved. V: a first onset inside the prevalent washout.
    p, e = _cohort({"T": (28, [(-3, 25)]), "U": (28, [(0, None)]), "V": (28, [(-3, 5), (8, 9)])})
    d = derive_all(p, e, {**CONFIG, "washout_days": 6})
    assert _rows(d["counting_process"], "T") == [] == _rows(d["counting_process"], "U")
    assert _rows(d["counting_process"], "V") == [(1, 7, 8, 1, 1), (2, 15, 28, 13, 0)]
    fe = d["first_episode"].set_index("participant_id")
    assert fe.loc[["T", "U", "V"], ["entry", "time", "event"]].values.tolist() == [
        [28, 28, 0],
        [28, 28, 0],
        [7, 8, 1],
    ]
    c = d["counts"].set_index("participant_id")
    assert c.loc[["T", "U", "V"], "exposure_days"].tolist() == [0, 0, 14]
    assert c.loc[["T", "U", "V"], "n_episodes"].tolist() == [0, 0, 1]


def test_washout_implies_excluding_episode_time(cohort):
    plain = counting_process(*cohort, {**CONFIG, "exclude_episode_time": True})
    zero = counting_process(*cohort, {**CONFIG, "exclude_episode_time": True, "washout_days": 0})
    pd.testing.assert_frame_equal(plain, zero)
    alone = counting_process(*cohort, {**CONFIG, "washout_days": 1})
    both = counting_process(*cohort, {**CONFIG, "exclude_episode_time": True, "washout_days": 1})
    pd.testing.assert_frame_equal(alone, both)
    # A: episode days 10-12, then day 30; C: days 3-5 then day 8 (unresolved)
    assert _rows(alone, "A") == [(1, 0, 10, 10, 1), (2, 13, 30, 17, 1)]
    assert _rows(alone, "C") == [(1, 0, 3, 3, 1), (2, 6, 8, 2, 1)]


@pytest.mark.parametrize("washout", [0, 1, 6, 30])
@pytest.mark.parametrize("exclude", [False, True])
def test_exposure_is_the_counting_process_time_at_risk_on_demo(repo, washout, exclude):
    p = pd.read_csv(
        repo / "data/demo/participants.csv", parse_dates=["enrolled_on", "followup_end"]
    )
    e = pd.read_csv(repo / "data/demo/episodes.csv", parse_dates=["onset_on", "resolved_on"])
    config = {**CONFIG, "exclude_episode_time": exclude, "washout_days": washout}
    d = derive_all(p, e, config)
    cp, c, fe = d["counting_process"], d["counts"], d["first_episode"]
    assert (cp["stop"] > cp["start"]).all() and (cp["gap"] == cp["stop"] - cp["start"]).all()
    total = cp.groupby("participant_id")["gap"].sum()
    got = c.set_index("participant_id")["exposure_days"]
    np.testing.assert_array_equal(got.loc[total.index], total)
    assert (got.drop(total.index) == 0).all()
    assert c["n_episodes"].sum() == cp["event"].sum() == len(e)  # no episode before enrolment
    # first_episode: entry is the start of the first interval, time the stop of the first event
    first = cp.groupby("participant_id").head(1).set_index("participant_id")
    fe = fe.set_index("participant_id")
    np.testing.assert_array_equal(fe.loc[first.index, "entry"], first["start"])
    ev = first[first["event"] == 1]
    np.testing.assert_array_equal(fe.loc[ev.index, "time"], ev["stop"])
    if washout == 0 and not exclude:
        assert got.sum() == (p["followup_end"] - p["enrolled_on"]).dt.days.sum()
    else:
        assert got.sum() < (p["followup_end"] - p["enrolled_on"]).dt.days.sum()


def test_natural_order_is_for_display_model_coding_stays_code_point():
    """Categorical levels: natural order (inst2 before inst10) for display; the models keep
    formulaic's code-point order, which the R references were written to (cgd's inherit:
    X-linked before autosomal), so derive leaves categorical covariates as text."""
    from recurstudy.contract import natural_key, natural_sorted

    sites = ["inst10", "inst2", "Inst1", None, "inst2", "inst1a"]
    assert natural_sorted(sites) == ["Inst1", "inst1a", "inst2", "inst10"]
    assert sorted(["b10", "b9", "a"], key=natural_key) == ["a", "b9", "b10"]
    p, e = _cohort({"A": (10, []), "B": (10, [])})
    p["site"] = ["inst10", "inst2"]
    cp = counting_process(p, e, {**CONFIG, "covariates": {"site": "categorical"}})
    assert cp["site"].dtype == object  # formulaic sorts text levels by code point
    assert sorted(["X-linked", "autosomal"]) == ["X-linked", "autosomal"]
    assert natural_sorted(["X-linked", "autosomal"]) == ["autosomal", "X-linked"]


def test_terminal_flag_on_counts_and_last_interval(cohort):
    # A died on day 30, the day of their second episode (no tail: the flag sits on the event
    # interval); C withdrew (not terminal); B completed; D died on the day of enrolment (no
    # interval at all, flagged on counts only). With terminal_events: [death, withdrawn] C's
    # censored tail carries the flag too.
    participants, episodes = cohort
    participants = participants.assign(end_reason=["death", "completed", "withdrawn", "death"])
    cp = counting_process(participants, episodes, CONFIG)
    assert list(cp.columns[-2:]) == ["event", "terminal"]  # appended; the rest unchanged
    assert cp.groupby("participant_id")["terminal"].apply(list).to_dict() == {
        "A": [0, 1],
        "B": [0],
        "C": [0, 0, 0],
    }
    n = counts(participants, episodes, CONFIG)
    assert n.set_index("participant_id")["terminal"].to_dict() == {"A": 1, "B": 0, "C": 0, "D": 1}
    both = {**CONFIG, "terminal_events": ["death", "withdrawn"]}
    cp2 = counting_process(participants, episodes, both)
    assert cp2.loc[cp2["participant_id"] == "C", "terminal"].tolist() == [0, 0, 1]
    # without an end_reason column nobody is terminal
    assert counts(*cohort, CONFIG)["terminal"].tolist() == [0, 0, 0, 0]
    assert counting_process(*cohort, CONFIG)["terminal"].sum() == 0
