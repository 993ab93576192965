"""The participant bootstrap: resampling by participant, seeds, chunking, and intervals."""

from pathlib import Path

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


B = 200  # replicates in the workflow test below


@pytest.fixture(scope="module")
def demo_bootstrap(tmp_path_factory):
    """The workflow's bootstrap and site outputs on the demo: the rate claim on the negative
    binomial (robust HC0 errors) and a hazard claim on Andersen-Gill (robust errors)."""
    import shutil
    import subprocess
    import sys

    import yaml
    from conftest import REPO

    run = tmp_path_factory.mktemp("bootstrap_run")
    shutil.copytree(REPO / "data/demo", run / "cohort")
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["data"] = {
        "participants": "cohort/participants.csv",
        "episodes": "cohort/episodes.csv",
        "pain_scores": "cohort/pain_scores.csv",
    }
    config["models"] = [
        {"name": "andersen_gill", "kind": "andersen_gill"},
        {"name": "negbin_rate", "kind": "negbin", "options": {"se": "robust"}},
    ]
    config["adjust_for"] = []
    config["claims"] = [
        {"id": "rate", "statement": "68% fewer", "metric": "rate_reduction", "claimed": 0.68},
        {"id": "hazard", "statement": "68% lower", "metric": "hazard_reduction", "claimed": 0.68},
    ]
    config["bootstrap"] = {"replicates": B, "chunk_size": 100, "seed": 20261204, "bca": False}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake = Path(sys.executable).with_name("snakemake")
    targets = ["results/sensitivity/bootstrap.csv", "results/sites/meta.csv"]
    cmd = [str(snakemake), "-s", str(REPO / "Snakefile"), "--directory", str(run)]
    cmd += ["--configfile", str(run / "config.yaml"), "--cores", "2", *targets]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run


@pytest.mark.workflow
@pytest.mark.parametrize("model", ["andersen_gill", "negbin_rate"])
def test_bootstrap_agrees_with_robust_interval_on_demo(demo_bootstrap, model):
    """With B replicates the bootstrap SD of the log ratio estimates its SE with a relative
    Monte Carlo SE of about 1 / sqrt(2 (B - 1)) (5% for B = 200), and a 2.5% percentile limit
    has a Monte Carlo SE of sqrt(p (1 - p) / B) / phi(z_p) times the SE (0.19 SE for B = 200).
    The robust (sandwich) SE and the bootstrap SE estimate the same quantity up to O(1/n)
    (n = 300 participants), so each must lie within 3 Monte Carlo SEs of the other."""
    out = pd.read_csv(demo_bootstrap / "results/sensitivity/bootstrap.csv")
    rows = out[out["model"] == model].set_index("method")
    assert set(rows.index) == {"robust", "percentile"}
    robust, pct = rows.loc["robust"], rows.loc["percentile"]
    assert pct["replicates"] == pct["converged"] == B
    se = robust["std_error"]
    assert abs(pct["std_error"] / se - 1) < 3 / np.sqrt(2 * (B - 1))
    p = 0.025
    mc_quantile = np.sqrt(p * (1 - p) / B) / stats.norm.pdf(stats.norm.ppf(p)) * se
    for limit in ("conf_low", "conf_high"):
        assert abs(np.log(pct[limit]) - np.log(robust[limit])) < 3 * mc_quantile
    assert pct["estimate"] == robust["estimate"]


@pytest.mark.workflow
def test_sites_on_demo(demo_bootstrap):
    effects = pd.read_csv(demo_bootstrap / "results/sites/effects.csv")
    meta = pd.read_csv(demo_bootstrap / "results/sites/meta.csv")
    assert list(effects["site"]) == ["site_A", "site_B", "site_C", "site_D"]
    assert effects["estimable"].all() and effects["n_participants"].sum() == 300
    assert list(meta["model"]) == ["negbin_rate"] and int(meta["k"].iloc[0]) == 4
    assert 0.2 < meta["ratio"].iloc[0] < 0.45  # the demo's true rate ratio is 0.32
