"""The participant bootstrap: resampling by participant, seeds, chunking, and intervals."""

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES, read_cohort
from scipy import stats

from recurstudy.bootstrap import (
    bca_interval,
    bootstrap_chunk,
    participant_ids,
    resample,
    summarize_bootstrap,
)
from recurstudy.models import ModelSpec


def _cp():
    return read_cohort(FIXTURES / "frailty" / "demo_counting_process.csv")


def test_resample_takes_all_rows_of_each_draw_under_new_ids():
    cp = _cp()
    ids = participant_ids({"counting_process": cp})
    draw = np.array([0, 0, 5])  # the first participant twice
    out = resample({"counting_process": cp}, ids, draw)["counting_process"]
    n0 = int((cp["participant_id"] == ids[0]).sum())
    n5 = int((cp["participant_id"] == ids[5]).sum())
    assert len(out) == 2 * n0 + n5
    assert out["participant_id"].nunique() == 3  # two draws of one person: two clusters
    assert set(out["participant_id"]) == {f"{ids[0]}#0", f"{ids[0]}#1", f"{ids[5]}#2"}
    cols = ["start", "stop", "event"]
    first = cp[cp["participant_id"] == ids[0]][cols].to_numpy()
    np.testing.assert_array_equal(out[out["participant_id"] == f"{ids[0]}#1"][cols], first)


def test_replicates_do_not_depend_on_chunking():
    cp = _cp()
    spec = ModelSpec("ag", "andersen_gill")
    whole = bootstrap_chunk(spec, {"counting_process": cp}, range(6), seed=3)
    parts = pd.concat(
        [
            bootstrap_chunk(spec, {"counting_process": cp}, range(0, 2), seed=3),
            bootstrap_chunk(spec, {"counting_process": cp}, range(2, 6), seed=3),
        ],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(whole, parts)
    other = bootstrap_chunk(spec, {"counting_process": cp}, range(6), seed=4)
    assert not np.allclose(whole["estimate"], other["estimate"])
    assert whole["converged"].all()


def test_bca_equals_percentile_without_bias_or_skew():
    # replicates symmetric about theta (z0 = 0) and a symmetric jackknife (a = 0)
    boot = stats.norm.ppf((np.arange(1, 2000) - 0.5) / 1999)
    jack = np.array([-1.0, 1.0, -2.0, 2.0])
    low, high = bca_interval(boot, 0.0, jack)
    np.testing.assert_allclose([low, high], np.quantile(boot, [0.025, 0.975]), atol=1e-12)


def test_bca_moves_with_the_bias():
    # theta above the median of the replicates: z0 > 0 moves both limits up
    boot = stats.norm.ppf((np.arange(1, 2000) - 0.5) / 1999)
    low, high = bca_interval(boot, 0.5, np.array([-1.0, 1.0]))
    pl, ph = np.quantile(boot, [0.025, 0.975])
    assert low > pl and high > ph


def test_summary_rows():
    reps = pd.DataFrame(
        {"replicate": range(4), "estimate": [-1.0, -1.2, np.nan, -1.4], "converged": True}
    )
    tidy = {"estimate": -1.2, "std_error": 0.1, "conf_low": -1.396, "conf_high": -1.004}
    tidy["robust"] = True
    out = summarize_bootstrap("ag", reps, tidy, seed=9).set_index("method")
    assert list(out.index) == ["robust", "percentile"]
    assert out.loc["percentile", "converged"] == 3 and out.loc["percentile", "replicates"] == 4
    assert out.loc["percentile", "std_error"] == pytest.approx(0.2, rel=1e-12)
    assert out.loc["robust", "conf_low"] == pytest.approx(np.exp(-1.396))
    assert (out["estimate"] == np.exp(-1.2)).all() and (out["seed"] == 9).all()
