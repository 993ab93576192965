"""The whole workflow on a public cohort (R's survival::cgd in the data contract, as
tests/fixtures/public/make_public_cohorts.R writes it): the report's first screen answers the
question in the study's own words, as on the demo (issue 11), for a cohort without the optional
end_reason column, pain scores, sites or a study title.

Checked in headless Chromium at 1280 px when it is installed (the first screen holds each
claim's statement and verdict and each arm's rate; nothing overflows; the page is offline and
inert), and in the HTML text otherwise.
"""

from __future__ import annotations

import html as html_lib
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import run_workflow
from test_browser import (
    WIDTH,
    assert_offline_and_inert,
    find_chromium,
    first_screen_expectations,
    open_in_chromium,
)

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def cgd_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("cgd_run")
    for name in ("participants.csv", "episodes.csv", "config.yaml"):
        shutil.copy(REPO / "tests/fixtures/public/cgd" / name, run / name)
    proc = run_workflow(run)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run


def _text(html: str) -> str:
    body = re.sub(r"<style.*?</style>|<script.*?</script>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", html_lib.unescape(re.sub(r"<[^>]+>", " ", body)))


def test_first_screen_answers_the_question_on_cgd(cgd_run, tmp_path):
    page = (cgd_run / "reports/report.html").read_text(encoding="utf-8")
    text = _text(page)
    config = yaml.safe_load((cgd_run / "config.yaml").read_text())
    claims = pd.read_csv(cgd_run / "results/claims.csv").set_index("claim_id")
    # the primary claim: R's numbers (docs/public-cohorts.md, tests/test_verdicts_public.py)
    nb = claims.loc["infections_67"]
    assert nb["verdict"] == "consistent but imprecise"
    assert "64% reduction (95% CI 34% to 81%)" in text
    answer = text[: text.index("2. Participant flow")]
    for c in config["claims"]:
        assert c["statement"] in answer
        assert f"Verdict: {claims.loc[c['id'], 'verdict']}" in answer.replace(" ,", ",")
    # events, follow-up and rates per arm, rate ratio and difference, in the study's arm labels
    assert "placebo (65 participants): 56 episodes over 609 participant-months" in answer
    assert "rIFN-g (63 participants): 20 episodes over 623 participant-months" in answer
    assert "Rate ratio, rIFN-g vs placebo: 0.35 (95% CI 0.19–0.65)" in answer
    assert "episodes prevented per 100 participant-years with rIFN-g" in answer
    assert "sensitivity models agree" in answer and "Not pre-specified" in answer
    # no end_reason column: the tipping-point analysis says why it was not done
    assert "not done: the participants table has no end_reason column" in answer
    assert "no change over the grid" not in text

    chromium = find_chromium()
    if chromium is None:
        pytest.skip("headless Chromium not installed: the HTML text was checked above")
    html = cgd_run / "reports/report.html"
    seen = open_in_chromium(chromium, html, tmp_path / "profile")
    assert_offline_and_inert(seen, html)
    facts = seen["facts"]
    assert facts["scrollWidth"] <= WIDTH, facts["wide"]
    first = facts["firstScreen"]
    missing = {
        what: [x for x in texts if x not in first]
        for what, texts in first_screen_expectations(cgd_run).items()
    }
    assert not {k: v for k, v in missing.items() if v}, first[:1500]
