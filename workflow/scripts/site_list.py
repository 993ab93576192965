"""Snakemake entry point (checkpoint): the sites of the validated participants as
{wildcard slug: site label} (recurstudy.sites)."""

import json

import pandas as pd

from recurstudy.sites import participant_sites, site_slugs

snakemake = globals()["snakemake"]
participants = pd.read_parquet(snakemake.input[0])
slugs = site_slugs(participant_sites(participants).unique())
with open(snakemake.output[0], "w") as fh:
    fh.write(json.dumps(slugs, indent=2, sort_keys=True) + "\n")
