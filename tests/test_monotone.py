"""Monotone likelihood (a coefficient running off to infinity) in every Cox-type fit.

The engine's infinite-coefficient test is R's (survival:::agreg.fit / coxph.fit, toler.inf =
sqrt(eps)); tests/fixtures/monotone holds R's warnings on a cohort with no episode in one arm and
on variants that R does not flag (few but nonzero episodes), made by make_monotone_reference.R
there.  Every model that fits a Cox-type likelihood must turn such a coefficient into its failed
row with the reason (recurstudy.models.monotone), never a "converged" ratio of 1e-9.
"""

from __future__ import annotations

import json
import shutil
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recurstudy.models import ModelSpec, fit_spec
from recurstudy.models.coxph_engine import coxph_fit

HERE = Path(__file__).resolve().parent
FIX = HERE / "fixtures" / "monotone"
ARM = "arm[T.intervention]"


@cache
def reference() -> dict:
    return json.loads((FIX / "monotone_reference.json").read_text())


@cache
def cohort() -> pd.DataFrame:
    return pd.read_csv(FIX / "cohort.csv")


def _engine_fit(key: str):
    """The engine on the data and call of R's fit `key` (see the R script)."""
    if key == "first_z_within_risk_sets":
        fz = pd.read_csv(FIX / "first_z.csv")
        X = np.column_stack([(fz["arm"] == "intervention").astype(float), fz["z"]])
        return coxph_fit(X, fz["time"], fz["event_few_i"], names=[ARM, "z"])
    d = cohort()
    dummy = (d["arm"] == "intervention").astype(float).to_numpy()
    ev = {"none_intervention": "event_none_i", "none_control": "event_none_c"}
    ev.update(few_intervention="event_few_i")
    suffix = key.split("_", 1)[1].replace("adjusted_", "").replace("total_", "")
    suffix = suffix.replace("gap_", "")
    event = ev[suffix]
    if key.startswith("first"):
        first = d[d["enum"] == 1]
        X = np.column_stack([(first["arm"] == "intervention").astype(float)])
        return coxph_fit(X, first["stop"], first[event], names=[ARM])
    X = dummy[:, None]
    names = [ARM]
    if "adjusted" in key:
        X = np.column_stack([dummy, d["x"].to_numpy(float)])
        names.append("x")
    strata = d["enum"] if key.startswith("pwp") else None
    if key.startswith("pwp_gap"):
        return coxph_fit(X, d["gap"], d[event], strata=strata, cluster=d["id"], names=names)
    return coxph_fit(
        X, d["stop"], d[event], start=d["start"], strata=strata, cluster=d["id"], names=names
    )


def test_reference_made_by_survival_3_5_3():
    ref = reference()
    assert ref["survival_version"] == "3.5.3"
    assert ref["toler_inf"] == pytest.approx(np.sqrt(1e-9), rel=1e-12)
    # the fixture covers both outcomes: fits R flags and fits it does not
    flagged = [bool(f["flagged"]) for f in ref["fits"].values()]
    assert any(flagged) and not all(flagged)


@pytest.mark.parametrize("key", list(reference()["fits"]))
def test_engine_flags_exactly_what_r_flags(key: str):
    r = reference()["fits"][key]
    fit = _engine_fit(key)
    r_ran_out = any("Ran out of iterations" in w for w in r["warnings"])
    assert fit.converged == (not r_ran_out), fit.message
    assert fit.iterations == r["iter"]
    if r_ran_out:
        # R: "one or more coefficients may be infinite", no variable named; the engine names
        # the ones whose SE exploded
        assert any("may be infinite" in w for w in r["warnings"])
        assert fit.infinite is not None and fit.infinite.any()
        assert "may be infinite" in fit.message
    else:
        assert fit.infinite is not None
        assert sorted(int(j) + 1 for j in np.flatnonzero(fit.infinite)) == r["flagged"]
        # the coefficient reached, diverged or not, is R's (same iteration path). A diverging
        # coefficient (about -21 after R's iterations) carries the rounding of every step: it
        # differed from R's by 7e-8 relative on one CPU and less on another; one iteration more
        # or less would move it by about 1 (5e-2 relative), so 1e-6 still pins the path.
        flagged = np.asarray(fit.infinite, dtype=bool)
        coef, ref_coef = np.asarray(fit.coef), np.asarray(r["coef"], dtype=float)
        np.testing.assert_allclose(coef[~flagged], ref_coef[~flagged], rtol=1e-8)
        np.testing.assert_allclose(coef[flagged], ref_coef[flagged], rtol=1e-6)
    assert fit.monotone.any() == bool(r["warnings"])


def test_structural_test_names_the_level_without_events():
    none_i = _engine_fit("ag_none_intervention")
    none_c = _engine_fit("ag_none_control")
    few = _engine_fit("ag_few_intervention")
    adj = _engine_fit("ag_adjusted_none_intervention")
    within = _engine_fit("first_z_within_risk_sets")
    assert none_i.no_event_level.tolist() == [0.0]  # every event has arm dummy 0
    assert none_c.no_event_level.tolist() == [1.0]
    assert np.isnan(few.no_event_level).all()
    assert adj.no_event_level[0] == 0.0 and np.isnan(adj.no_event_level[1])
    # every event at the highest z of its risk set, not of the data: only R's test sees it
    assert np.isnan(within.no_event_level).all()
    assert within.infinite.tolist() == [False, True] and within.converged


def test_engine_without_structural_signal_is_untouched_on_ordinary_data():
    """Few episodes in one arm: a finite, converged estimate with no flag (no false positive),
    the same as R's."""
    fit = _engine_fit("ag_few_intervention")
    r = reference()["fits"]["ag_few_intervention"]
    assert fit.converged and not fit.monotone.any() and fit.message == ""
    assert fit.coef[0] == pytest.approx(r["coef"][0], rel=1e-10)
    assert np.isfinite(fit.robust_se).all()


# ----------------------------------------------------------------- every Cox-type model


def _swap_arms(df: pd.DataFrame) -> pd.DataFrame:
    swap = {"control": "intervention", "intervention": "control"}
    return df.assign(arm=df["arm"].astype(str).map(swap))


@cache
def _degenerate_data(no_episodes_in: str) -> dict[str, pd.DataFrame]:
    """The corpus cohort with episodes in the control arm only (tests/bad_inputs), validated
    and derived as the workflow does; with `no_episodes_in` = control the arms are swapped."""
    import tempfile

    from recurstudy.config import load_config
    from recurstudy.derive import derive_all, read_clean
    from recurstudy.validate import main_validate

    run = Path(tempfile.mkdtemp(prefix="monotone_"))
    shutil.copytree(HERE / "bad_inputs" / "degenerate_one_arm_no_episodes", run / "c")
    participants = pd.read_csv(run / "c" / "participants.csv", dtype=str)
    participants["end_reason"] = "completed"  # the IPCW model needs it
    participants.to_csv(run / "c" / "participants.csv", index=False)
    config = {
        "data": {"participants": "participants.csv", "episodes": "episodes.csv"},
        "covariates": {"age": "numeric"},
    }
    (run / "c" / "run.yaml").write_text(json.dumps(config))
    code = main_validate(
        str(run / "c" / "run.yaml"), str(run / "v"), str(run / "clean"), base_dir=str(run / "c")
    )
    assert code == 0
    tables = read_clean(run / "clean")
    data: dict = derive_all(
        tables["participants"], tables["episodes"], load_config(run / "c/run.yaml")
    )
    data.update(tables)
    if no_episodes_in == "control":
        data = {k: (_swap_arms(v) if "arm" in v.columns else v) for k, v in data.items()}
    return data


COX_TYPE = [
    ("cox_first_episode", "cox", {}),
    ("andersen_gill", "andersen_gill", {}),
    ("pwp_total_time", "pwp", {"timescale": "total"}),
    ("pwp_gap_time", "pwp", {"timescale": "gap"}),
    ("frailty_cox", "frailty_cox", {}),
    ("ipcw_andersen_gill", "ipcw_andersen_gill", {}),
    ("ghosh_lin", "ghosh_lin", {}),
    ("joint_frailty", "joint_frailty", {}),
]


@pytest.mark.parametrize("arm", ["intervention", "control"])
@pytest.mark.parametrize(("name", "kind", "options"), COX_TYPE)
def test_cox_type_model_with_no_episodes_in_an_arm_is_not_estimable(name, kind, options, arm):
    data = _degenerate_data(arm)
    for formula in ("arm", "arm + age"):
        spec = ModelSpec(name, kind, formula, dict(options))
        result = fit_spec(spec, data)
        table = result.table
        assert not result.converged, table.to_string()
        assert len(table) == 1 and table["term"].iloc[0] == ARM
        assert table[["estimate", "std_error", "exp_estimate"]].isna().all(axis=None)
        assert not bool(table["converged"].iloc[0])
        msg = str(table["message"].iloc[0])
        assert "not estimable" in msg, msg
        if kind != "joint_frailty":  # its own separation check words it differently
            assert f"no episodes in arm {arm}" in msg, msg
            assert "monotone likelihood" in msg
        assert not msg.startswith("failed:"), msg  # the designed path, not a caught error
        assert table["n_events"].iloc[0] > 0


@pytest.mark.parametrize("arm", ["intervention", "control"])
def test_ipcw_negbin_with_no_episodes_in_an_arm_says_so(arm):
    """Its unweighted glm.nb (theta) had raised a singular-matrix error, or said only that it
    did not converge."""
    res = fit_spec(ModelSpec("ipcw_negbin", "ipcw_negbin"), _degenerate_data(arm))
    assert not res.converged
    assert (
        res.message == f"no episodes in the {arm} arm: the rate ratio is not estimable (separation)"
    )


def test_cox_message_cites_r_and_frailty_does_not_claim_r_warns():
    data = _degenerate_data("intervention")
    ag = fit_spec(ModelSpec("andersen_gill", "andersen_gill"), data)
    assert ag.message == (
        "the hazard ratio for arm is not estimable: no episodes in arm intervention (monotone "
        "likelihood: the coefficient runs off to -infinity; R's coxph warns the coefficient "
        "may be infinite)"
    )
    fr = fit_spec(ModelSpec("frailty_cox", "frailty_cox"), data)
    assert "R's" not in fr.message  # R's coxpenal.fit gives no such warning


def test_frailty_numeric_test_alone_flags_the_diverging_arm():
    """Without the structural test the penalised fit's remaining Newton step flags it too."""
    from recurstudy.models.base import design
    from recurstudy.models.frailty import frailty_cox_fit

    cp = _degenerate_data("intervention")["counting_process"]
    X, names = design("arm", cp, intercept=False)
    fit = frailty_cox_fit(
        X.to_numpy(), cp["start"], cp["stop"], cp["event"], cp["participant_id"], names=names
    )
    assert fit.infinite.tolist() == [True]
    assert fit.no_event_level.tolist() == [0.0]


def test_sites_and_bootstrap_do_not_count_a_diverged_fit():
    from recurstudy.bootstrap import intervention_log_ratio
    from recurstudy.sites import site_effect, stratified_andersen_gill

    data = _degenerate_data("intervention")
    spec = ModelSpec("andersen_gill", "andersen_gill")
    est, ok = intervention_log_ratio(spec, data)
    assert not ok and np.isnan(est)
    participants = data["participants"].assign(
        site=lambda d: np.where(d.index % 2 == 0, "north", "south")
    )
    strat = stratified_andersen_gill(spec, data["counting_process"], participants)
    assert not bool(strat["converged"].iloc[0])
    assert "no episodes in arm intervention" in strat["message"].iloc[0]
    row = site_effect(spec, "north", participants, data, min_cell=1)
    assert not bool(row["estimable"].iloc[0])
    assert "no episodes in arm intervention" in row["message"].iloc[0]


@pytest.mark.parametrize("arm", ["intervention", "control"])
def test_every_kind_with_no_episodes_in_an_arm_fails_cleanly(arm):
    """Every registered kind (strict mode: an unexpected error fails this test): an effect
    model's row is failed with a reason that says what is not estimable; nothing raises."""
    from recurstudy.models import _load_all
    from recurstudy.models.base import REGISTRY

    _load_all()
    data = _degenerate_data(arm)
    for kind in sorted(k for k in REGISTRY if not k.startswith("test_")):
        for formula in ("arm", "arm + age"):
            res = fit_spec(ModelSpec(kind, kind, formula), data)
            if kind == "kaplan_meier":  # descriptive: curves per arm, a log-rank test
                assert res.converged
                continue
            assert not res.converged, (kind, formula)
            assert "not estimable" in res.message or res.message.startswith("skipped: no"), (
                kind,
                res.message,
            )


def test_a_covariate_flagged_only_by_rs_test_names_it():
    """R's test alone (every event at the highest z of its own risk set): the failed row names
    z, not the arm."""
    from recurstudy.models.monotone import monotone_reasons

    fit = _engine_fit("first_z_within_risk_sets")
    spec = ModelSpec("cox_first_episode", "cox", "arm + z")
    reasons = monotone_reasons(spec, [ARM, "z"], fit.infinite, fit.no_event_level)
    assert len(reasons) == 1
    assert reasons[0].startswith("the hazard ratio for z is not estimable: the likelihood")
    assert "R's coxph test for an infinite coefficient" in reasons[0]
