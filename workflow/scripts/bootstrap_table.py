"""Snakemake entry point: results/sensitivity/bootstrap.csv, every bootstrapped model stacked."""

import pandas as pd

from recurstudy.models import write_csv

snakemake = globals()["snakemake"]
frames = [pd.read_csv(p) for p in snakemake.input]
write_csv(pd.concat(frames, ignore_index=True), snakemake.output[0])
