"""Configuration: schema defaults, and clear errors for what the schema cannot see."""

import pytest
import yaml

from recurstudy.config import ConfigError, load_config


def _write(tmp_path, config):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_demo_config_and_defaults(repo, tmp_path):
    config = load_config(repo / "config/config.yaml")
    assert config["on_invalid"] == "fail" and config["min_cell"] == 5
    minimal = load_config(
        _write(tmp_path, {"data": {"participants": "p.csv", "episodes": "e.csv"}})
    )
    assert minimal["arms"] == {"control": "control", "intervention": "intervention"}
    assert minimal["power"]["replicates"] == 500 and minimal["claims"] == []
    assert minimal["design"] == "randomized" and minimal["exclude_episode_time"] is False
    assert minimal["washout_days"] == 0


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"on_invalid": "drop"}, "drop"),
        ({"adjust_for": ["bmi"]}, "bmi"),
        ({"models": [{"name": "m", "kind": "nonsense"}]}, "unknown model kind 'nonsense'"),
        ({"models": [{"name": "m", "kind": "cox"}, {"name": "m", "kind": "negbin"}]}, "unique"),
        (
            {
                "models": [{"name": "m", "kind": "cox"}],
                "claims": [
                    {"id": "c", "statement": "s", "metric": "rate_reduction", "claimed": 0.5}
                ],
            },
            "negbin_rate",
        ),
        ({"unknown_key": 1}, "unknown_key"),
        ({"covariates": {"exposure_days": "numeric"}}, "exposure_days"),
        ({"covariates": {"stop": "numeric", "time": "integer"}}, "stop, time"),
        ({"covariates": {"entry": "numeric"}}, "entry"),
        ({"washout_days": -1}, "washout_days"),
        ({"washout_days": 2.5}, "washout_days"),
    ],
)
def test_config_errors_name_the_problem(tmp_path, extra, words):
    config = {"data": {"participants": "p.csv", "episodes": "e.csv"}, **extra}
    with pytest.raises(ConfigError, match="invalid configuration") as err:
        load_config(_write(tmp_path, config))
    assert words in str(err.value)


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_numeric_arm_labels_are_text(tmp_path):
    config = {
        "data": {"participants": "p.csv", "episodes": "e.csv"},
        "arms": {"control": 1, "intervention": 2},
    }
    assert load_config(_write(tmp_path, config))["arms"] == {"control": "1", "intervention": "2"}


def _claim(claimed, **kw):
    return {"id": "c", "statement": "s", "metric": "rate_reduction", "claimed": claimed, **kw}


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        # a misspelt option is named with what is allowed, never silently ignored
        (
            {"models": [{"name": "p", "kind": "pwp", "options": {"timscale": "gap"}}]},
            "model 'p': unknown option 'timscale'; allowed options: ties ('efron' | 'breslow'",
        ),
        (
            {"models": [{"name": "p", "kind": "pwp", "options": {"timescale": "gaps"}}]},
            "option 'timescale' must be 'total' | 'gap', not 'gaps'",
        ),
        (
            {"models": [{"name": "p", "kind": "pwp", "options": {"max_stratum": 0}}]},
            "option 'max_stratum' must be >= 1, not 0",
        ),
        (
            {"models": [{"name": "f", "kind": "frailty_cox", "options": {"outer_max": "ten"}}]},
            "option 'outer_max' must be int, not 'ten'",
        ),
        (
            {"models": [{"name": "f", "kind": "frailty_cox", "options": {"theta": True}}]},
            "option 'theta' must be float | null, not True",
        ),
        (
            {"models": [{"name": "k", "kind": "kaplan_meier", "options": {"ties": "efron"}}]},
            "model 'k': unknown option 'ties'; allowed options: none",
        ),
        # claimed is a fraction; a percentage gets a hint, an increase is refused
        ({"claims": [_claim(30)]}, "30 looks like a percentage: write claimed: 0.3"),
        ({"claims": [_claim(1)]}, "must be a fraction in (0, 1), not 1"),
        ({"claims": [_claim(-0.5)]}, "an increase cannot be claimed"),
        ({"claims": [_claim("68%")]}, "must be a number in (0, 1), not '68%'"),
        # the claim's model must be able to serve its metric
        (
            {
                "models": [{"name": "m", "kind": "negbin"}],
                "claims": [_claim(0.5, metric="pain_reduction", model="m")],
            },
            "metric pain_reduction cannot be read from model 'm'",
        ),
        ({"arms": {"control": "A", "intervention": "A"}}, "the same label 'A'"),
        (
            {"claims": [_claim(0.5, model="negbin_rate"), _claim(0.4, model="negbin_rate")]},
            "the id 'c' is used twice",
        ),
        ({"models": []}, "models"),
    ],
)
def test_config_checked_before_any_work(tmp_path, extra, words):
    config = {"data": {"participants": "p.csv", "episodes": "e.csv"}, **extra}
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, config))
    text = str(err.value)
    assert words in text
    # the cause in a few lines: no schema dump, no traceback
    assert "Failed validating" not in text and "schema[" not in text and "Traceback" not in text
    assert len(text.splitlines()) <= 4


def test_several_problems_are_reported_together(tmp_path):
    config = {
        "data": {"participants": "p.csv", "episodes": "e.csv"},
        "min_cell": "five",
        "claims": [_claim(68)],
    }
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, config))
    lines = str(err.value).splitlines()
    assert lines[0] == "invalid configuration:"
    assert any(line.startswith("  - min_cell:") for line in lines)
    assert any("claims[0] ('c').claimed" in line and "0.68" in line for line in lines)


def test_models_default_comes_from_the_schema(repo, tmp_path):
    from recurstudy.config import schema

    minimal = load_config(
        _write(tmp_path, {"data": {"participants": "p.csv", "episodes": "e.csv"}})
    )
    default = yaml.safe_load((repo / "config/schema.yaml").read_text())["properties"]["models"]
    assert minimal["models"][0]["name"] == default["default"][0]["name"] == "km_first_episode"
    assert len(minimal["models"]) == len(schema()["properties"]["models"]["default"]) == 10


def test_options_get_their_defaults(tmp_path):
    from recurstudy.models import model_specs

    config = load_config(
        _write(
            tmp_path,
            {
                "data": {"participants": "p.csv", "episodes": "e.csv"},
                "models": [{"name": "p", "kind": "pwp", "options": {"timescale": "gap"}}],
            },
        )
    )
    (spec,) = model_specs(config)
    assert spec.options == {"ties": "efron", "timescale": "gap", "max_stratum": None}


def test_config_error_in_the_workflow_is_a_short_message(repo, tmp_path):
    """The Snakefile prints the cause and stops: no traceback, no Snakemake noise after it."""
    import subprocess
    import sys
    from pathlib import Path

    config = yaml.safe_load((repo / "config/config.yaml").read_text())
    config["claims"][0]["claimed"] = 68
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake = Path(sys.executable).with_name("snakemake")
    proc = subprocess.run(
        [str(snakemake), "-s", str(repo / "Snakefile"), "--directory", str(tmp_path)]
        + ["--configfile", str(tmp_path / "config.yaml"), "-n"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert err.endswith("68 looks like a percentage: write claimed: 0.68"), err[-500:]
    assert "Traceback" not in err and "WorkflowError" not in err
    assert len(err.splitlines()) <= 3
