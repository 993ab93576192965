"""The worked example of docs/extending.md runs as written: one module plus one config entry, and
the model reaches the report through its own description with no other edit."""

import html
import types

import pandas as pd
import pytest
from test_report import custom_study, docs_example_code  # noqa: F401  (session fixture)

from recurstudy.derive import derive_all
from recurstudy.models import fit_spec, get_model, model_specs
from recurstudy.models.base import REGISTRY


def test_docs_example_model(repo):
    code = docs_example_code()
    module = types.ModuleType("recurstudy.models.quasipoisson_doc")
    exec(compile(code, "docs/extending.md", "exec"), module.__dict__)
    try:
        config = {
            "arms": {"control": "control", "intervention": "intervention"},
            "covariates": {"age": "numeric"},
            "adjust_for": ["age"],
            "models": [{"name": "quasipoisson_rate", "kind": "quasipoisson"}],
        }
        p = pd.read_csv(
            repo / "data/demo/participants.csv", parse_dates=["enrolled_on", "followup_end"]
        )
        e = pd.read_csv(repo / "data/demo/episodes.csv", parse_dates=["onset_on", "resolved_on"])
        data = derive_all(p, e, config)
        specs = model_specs(config)
        assert [s.name for s in specs] == ["quasipoisson_rate", "quasipoisson_rate_adjusted"]
        res = fit_spec(specs[0], data)
        arm = res.table.set_index("term").loc["arm[T.intervention]"]
        # Same point estimate as the Poisson rate ratio (events / exposure per arm) on the demo.
        c = data["counts"]
        rate = c.groupby("arm", observed=True)[["n_episodes", "exposure_days"]].sum()
        ratio = rate["n_episodes"] / rate["exposure_days"]
        assert arm["exp_estimate"] == pytest.approx(ratio.iloc[1] / ratio.iloc[0])
        assert res.extras["dispersion"]["scale"].iloc[0] > 1  # the demo is overdispersed
        described = get_model("quasipoisson").describe(specs[0])
        assert described.ratio and described.effect_measure == "rate ratio"
        assert [x.file for x in described.extras] == list(res.extras)  # every extra declared
        assert "rate_reduction" in described.claim_metrics
    finally:
        REGISTRY.pop("quasipoisson", None)


def _description() -> dict:
    """The example's title, estimand and extra caption, read from the docs' code."""
    module = types.ModuleType("recurstudy.models.quasipoisson_doc")
    exec(compile(docs_example_code(), "docs/extending.md", "exec"), module.__dict__)
    try:
        d = get_model("quasipoisson").describe()
        return {"title": d.title, "estimand": d.estimand, "caption": d.extras[0].caption}
    finally:
        REGISTRY.pop("quasipoisson", None)


def test_docs_example_reaches_the_report(custom_study):  # noqa: F811
    """Added as one module to (a copy of) the package and one config entry, the example model is
    fitted by the workflow, read by a claim, and shown in the rendered report: its title and
    estimand in the methods, its extra table under its caption, its row in the forest plot."""
    d = _description()
    page = (custom_study / "reports/report.html").read_text(encoding="utf-8")
    for key in ("title", "estimand", "caption"):
        assert html.escape(" ".join(d[key].split()), quote=True) in page, key
    assert html.escape(f"{d['title']}: {d['caption']}", quote=True) in page  # diagnostics
    est = pd.read_csv(custom_study / "results/estimates.csv")
    assert {"quasipoisson_rate", "quasipoisson_rate_adjusted"} <= set(est["model"])
    claims = pd.read_csv(custom_study / "results/claims.csv")
    assert claims.loc[0, "model"] == "quasipoisson_rate" and claims.loc[0, "estimate"] > 0
    forest = pd.read_csv(custom_study / "results/sensitivity/forest.csv")
    assert "quasipoisson_rate" in set(forest["model"])
    assert (custom_study / "results/models/quasipoisson_rate/dispersion.csv").is_file()
