"""Snakemake entry point: power, its Monte Carlo error, the minimum detectable effect from the
MDE grid and power under informative dropout (rate and hazard claims), or a pain claim's power."""

import json

import pandas as pd

from recurstudy.power import summarize_pain_power, summarize_power

snakemake = globals()["snakemake"]
params = snakemake.params


def _read(paths):
    return pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)


claimed, alpha = float(params.claimed), float(params.alpha)
if params.kind == "pain":
    summary = summarize_pain_power(_read(snakemake.input.reps), claimed, alpha)
else:
    informative = snakemake.input.get("informative")
    summary = summarize_power(
        _read(snakemake.input.reps),
        claimed,
        alpha,
        grid=_read(snakemake.input.grid),
        informative=_read(informative) if informative else None,
        informative_link=float(params.dropout_link) if informative else None,
    )
with open(snakemake.output[0], "w") as fh:
    fh.write(json.dumps(summary, indent=2, sort_keys=True) + "\n")
