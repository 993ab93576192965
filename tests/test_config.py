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
