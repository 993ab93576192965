"""The worked example of docs/extending.md runs as written: one module plus one config entry."""

import re
import types

import pandas as pd
import pytest

from recurstudy.derive import derive_all
from recurstudy.models import fit_spec, model_specs
from recurstudy.models.base import REGISTRY


def test_docs_example_model(repo):
    text = (repo / "docs/extending.md").read_text()
    code = re.search(r"quasipoisson.py`:\n\n```python\n(.*?)```", text, re.S).group(1)
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
    finally:
        REGISTRY.pop("quasipoisson", None)
