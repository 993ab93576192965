"""Snakemake entry point: derive one analysis dataset (recurstudy.derive does the work)."""

import logging

import pandas as pd

from recurstudy.derive import DATASETS, write_parquet
from recurstudy.settings import load_settings

snakemake = globals()["snakemake"]
logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(message)s")
participants = pd.read_parquet(snakemake.input.participants)
episodes = pd.read_parquet(snakemake.input.episodes)
settings = load_settings(snakemake.params.settings, "derive")
df = DATASETS[snakemake.params.dataset](participants, episodes, settings)
write_parquet(df, snakemake.output[0])
logging.info("%s: %d rows, %d columns", snakemake.params.dataset, len(df), df.shape[1])
