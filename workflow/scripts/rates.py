"""Snakemake entry point: event rates per arm, rate ratio and rate difference
(recurstudy.rates.rate_summary) for the report's first screen."""

import logging

import pandas as pd

from recurstudy.csvout import write_csv
from recurstudy.rates import rate_summary
from recurstudy.settings import load_settings

snakemake = globals()["snakemake"]
logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(message)s")
settings = load_settings(snakemake.params.settings, "rates")
out = rate_summary(pd.read_parquet(snakemake.input.counts), settings)
write_csv(out, snakemake.output[0])
logging.info("%s", out.to_string(index=False))
