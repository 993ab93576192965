"""Snakemake entry point: derive one analysis dataset (recurstudy.derive does the work)."""

import logging

import pandas as pd

from recurstudy.derive import DATASETS, write_parquet

snakemake = globals()["snakemake"]
logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(message)s")
participants = pd.read_parquet(snakemake.input.participants)
episodes = pd.read_parquet(snakemake.input.episodes)
df = DATASETS[snakemake.params.dataset](participants, episodes, snakemake.config)
write_parquet(df, snakemake.output[0])
logging.info("%s: %d rows, %d columns", snakemake.params.dataset, len(df), df.shape[1])
