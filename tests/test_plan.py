"""The pre-specified plan: lock, match, change detection, and the command."""

import json

import pytest
import yaml

from recurstudy import plan
from recurstudy.cli import main
from recurstudy.config import load_config


@pytest.fixture
def study(repo, tmp_path):
    config = yaml.safe_load((repo / "config/config.yaml").read_text())
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_lock_then_check(study, capsys):
    assert main(["plan", "check", "--config", str(study)]) == 1
    assert "not pre-specified: no plan was locked" in capsys.readouterr().out
    assert main(["plan", "lock", "--config", str(study), "--date", "2026-11-30"]) == 0
    record = json.loads((study.parent / "plan.lock.json").read_text())
    assert record["locked_on"] == "2026-11-30" and len(record["sha256"]) == 64
    assert main(["plan", "check", "--config", str(study)]) == 0
    assert "pre-specified: plan locked on 2026-11-30" in capsys.readouterr().out
    # locking the same analysis again keeps the original date
    assert main(["plan", "lock", "--config", str(study), "--date", "2026-12-24"]) == 0
    assert json.loads((study.parent / "plan.lock.json").read_text())["locked_on"] == "2026-11-30"


def test_changed_analysis_is_not_prespecified(study):
    config = load_config(study)
    plan.lock(config, study.parent / "plan.lock.json", today="2026-11-30")
    config["claims"][0]["claimed"] = 0.5
    config["models"][3]["options"]["timescale"] = "gap"
    st = plan.status(config, study.parent / "plan.lock.json")
    assert not st["prespecified"] and st["changed"] == ["claims", "models"]
    assert st["statement"].startswith("not pre-specified: the analysis differs from the plan")
    # what does not define the analysis (data paths, wording, power) does not break the plan
    config = load_config(study)
    config["data"]["participants"] = "elsewhere.csv"
    config["study"]["title"] = "Another title"
    config["power"]["replicates"] = 10
    assert plan.status(config, study.parent / "plan.lock.json")["prespecified"]
    with pytest.raises(plan.PlanError, match="not overwritten"):
        plan.lock({**config, "design": "observational"}, study.parent / "plan.lock.json")


def test_plan_path_stays_in_the_run_folder(tmp_path):
    with pytest.raises(plan.PlanError, match="inside the run folder"):
        plan.plan_path({"plan": "../elsewhere.json"}, tmp_path)
    with pytest.raises(plan.PlanError, match="inside the run folder"):
        plan.plan_path({"plan": "/etc/passwd"}, tmp_path)
    assert plan.plan_path({}, tmp_path) == tmp_path / "plan.lock.json"
