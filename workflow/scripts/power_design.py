"""Snakemake entry point: the simulation design read off the data (recurstudy.power)."""

import json

import pandas as pd

from recurstudy.power import design_from_data
from recurstudy.settings import load_settings

snakemake = globals()["snakemake"]
design = design_from_data(
    pd.read_parquet(snakemake.input.participants),
    pd.read_parquet(snakemake.input.counts),
    load_settings(snakemake.params.settings, "power_design"),
)
with open(snakemake.output[0], "w") as fh:
    fh.write(json.dumps(design, indent=2, sort_keys=True) + "\n")
