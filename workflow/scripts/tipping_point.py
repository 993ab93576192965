"""Snakemake entry point: the tipping-point analysis of informative dropout
(recurstudy.tipping does the work)."""

import logging

import pandas as pd

from recurstudy.models import model_specs, write_csv
from recurstudy.settings import load_settings
from recurstudy.tipping import TIPPING_COLUMNS, tipping_point

snakemake = globals()["snakemake"]
logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(message)s")
settings = load_settings(snakemake.params.settings, "tipping_point")
config = {key: settings[key] for key in settings}  # only the declared keys, as a plain dict
if config.get("tipping_point", {}).get("enabled", True):
    specs = {spec.name: spec for spec in model_specs(config)}
    data = {key: pd.read_parquet(path) for key, path in snakemake.input.items()}
    table = tipping_point(config, specs, data)
else:
    table = pd.DataFrame([{"note": "tipping-point analysis disabled (tipping_point.enabled)"}])
    table = table.reindex(columns=TIPPING_COLUMNS)
write_csv(table, snakemake.output[0])
logging.info("tipping point: %d rows", len(table))
