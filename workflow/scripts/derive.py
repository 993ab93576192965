"""Snakemake entry point: derive the analysis datasets (recurstudy.derive does the work)."""

import logging

from recurstudy.derive import derive_all, write_datasets
from recurstudy.io import read_parquet
from recurstudy.settings import load_settings

snakemake = globals()["snakemake"]
logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(message)s")
participants = read_parquet(snakemake.input.participants)
episodes = read_parquet(snakemake.input.episodes)
settings = load_settings(snakemake.params.settings, "derive")
frames = derive_all(participants, episodes, settings)
write_datasets(frames, {name: snakemake.output[name] for name in frames})
for name, df in frames.items():
    logging.info("%s: %d rows, %d columns", name, len(df), df.shape[1])
