"""Formulas from the config are untrusted: only the documented grammar reaches formulaic."""

import pytest
import yaml

from recurstudy.config import ConfigError, load_config
from recurstudy.formula import FormulaError, check_formula

NAMES = ["arm", "age", "sex", "site"]


@pytest.mark.parametrize(
    ("text", "used"),
    [
        ("arm", ["arm"]),
        ("~ arm + age", ["arm", "age"]),
        ("arm*sex + log(age)", ["arm", "sex", "age"]),
        ("arm + C(site) + arm:age", ["arm", "site", "arm", "age"]),
        ("1", []),
    ],
)
def test_grammar_accepts(text, used):
    assert check_formula(text, NAMES) == used


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("arm + {__import__('os').system('true')}", "'{' is not allowed"),
        ("arm + `a` + b`", "'`' is not allowed"),
        ("arm + exec(age)", "exec() is not an allowed transform"),
        ("arm + I(age)", "I() is not an allowed transform"),
        ("arm + age ** 2", "'2' is not allowed"),
        ("arm + weight", "weight is not arm or a declared covariate"),
        ("arm +", "ends where a term is expected"),
        ("arm age", "unexpected 'age'"),
        ("log(age, 2)", "',' is not allowed"),
        ("log(1)", "takes one column name"),
        ("", "empty formula"),
    ],
)
def test_grammar_refuses(text, words):
    with pytest.raises(FormulaError) as err:
        check_formula(text, NAMES)
    assert words in str(err.value)


def _config(tmp_path, **extra):
    config = {"data": {"participants": "p.csv", "episodes": "e.csv"}, **extra}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (
            {"models": [{"name": "m", "kind": "negbin", "formula": "arm + {1}"}]},
            "models[0] ('m').formula: 'arm + {1}': '{' is not allowed",
        ),
        (
            {"models": [{"name": "z", "kind": "zinb", "options": {"inflation": "exec(arm)"}}]},
            "models[0] ('z').options.inflation",
        ),
        ({"covariates": {"body mass": "numeric"}}, "covariates"),
        ({"covariates": {"a`b": "numeric"}}, "covariates"),
        ({"covariates": {"x": "numeric"}, "adjust_for": ["x`"]}, "adjust_for[0]"),
    ],
)
def test_config_formulas_and_names_are_checked(tmp_path, extra, words):
    with pytest.raises(ConfigError) as err:
        load_config(_config(tmp_path, **extra))
    assert words in str(err.value)


def test_design_refuses_outside_the_grammar():
    """Defence in depth: a library caller that skips the config check cannot reach formulaic."""
    import pandas as pd

    from recurstudy.models.base import design

    df = pd.DataFrame({"arm": ["a", "b"], "age": [1.0, 2.0]})
    with pytest.raises(FormulaError):
        design("arm + {open('/etc/passwd')}", df, intercept=True)
    X, names = design("arm + log(age)", df, intercept=True)
    assert names == ["Intercept", "arm[T.b]", "log(age)"]
