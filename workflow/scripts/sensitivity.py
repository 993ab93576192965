"""Snakemake entry point: the intervention effect across models and designs
(recurstudy.sensitivity does the work)."""

import logging

import pandas as pd

from recurstudy.models import write_csv
from recurstudy.sensitivity import control_risk, crude_vs_adjusted, forest, iptw
from recurstudy.settings import load_settings

snakemake = globals()["snakemake"]
logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(message)s")
cfg = load_settings(snakemake.params.settings, "sensitivity")
counts = pd.read_parquet(snakemake.input.counts)
f = forest(pd.read_csv(snakemake.input.estimates), cfg, control_risk(counts, cfg))
write_csv(f, snakemake.output.forest)
write_csv(crude_vs_adjusted(f), snakemake.output.crude_vs_adjusted)
cols = ["model", "title", "group", "exp_estimate", "exp_conf_low", "exp_conf_high"]
cols += ["e_value", "e_value_ci", "e_value_scale", "e_value_note"]
write_csv(f[cols], snakemake.output.e_value)
if cfg["design"] == "observational" and cfg.get("adjust_for"):
    result, balance = iptw(counts, cfg)
    note = ""
else:
    result, balance = pd.DataFrame({"model": []}), pd.DataFrame({"covariate": []})
    note = (
        "not computed: design is randomized"
        if cfg["design"] == "randomized"
        else ("not computed: no covariates under adjust_for")
    )
write_csv(
    result.assign(note=note) if len(result) else pd.DataFrame({"note": [note]}),
    snakemake.output.iptw,
)
write_csv(balance, snakemake.output.balance)
logging.info("forest: %d models; iptw: %s", len(f), note or "computed")
