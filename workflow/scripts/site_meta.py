"""Snakemake entry point: per-site effects stacked and their random-effects meta-analysis."""

import logging

import pandas as pd

from recurstudy.models import write_csv
from recurstudy.sites import EFFECT_COLUMNS, meta_analysis

snakemake = globals()["snakemake"]
logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(message)s")
frames = [pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in snakemake.input]
effects = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=EFFECT_COLUMNS)
effects["site"] = effects["site"].astype(str)
write_csv(effects, snakemake.output.effects)
meta = meta_analysis(effects)
write_csv(meta, snakemake.output.meta)
logging.info("%s", meta.to_string(index=False))
