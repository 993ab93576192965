"""Snakemake entry point: power, its Monte Carlo error and the minimum detectable effect."""

import json

import pandas as pd

from recurstudy.power import summarize_power

snakemake = globals()["snakemake"]
reps = pd.concat([pd.read_csv(p) for p in snakemake.input], ignore_index=True)
summary = summarize_power(reps, float(snakemake.params.claimed), float(snakemake.params.alpha))
with open(snakemake.output[0], "w") as fh:
    fh.write(json.dumps(summary, indent=2, sort_keys=True) + "\n")
