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
