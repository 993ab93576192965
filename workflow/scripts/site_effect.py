"""Snakemake entry point: the intervention effect in one site (recurstudy.sites)."""

import json
import logging

import pandas as pd

from recurstudy.models import write_csv
from recurstudy.settings import spec_from_settings
from recurstudy.sites import participant_sites, site_effect

snakemake = globals()["snakemake"]
logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(message)s")
spec = spec_from_settings(snakemake.params.spec)
with open(snakemake.input.sites) as fh:
    label = json.load(fh)[snakemake.wildcards.site]
participants = pd.read_parquet(snakemake.input.participants)
participants = participants.assign(site=participant_sites(participants))
data = {key: pd.read_parquet(path) for key, path in snakemake.input.items() if key != "sites"}
data["participants"] = participants
row = site_effect(spec, label, participants, data, int(snakemake.params.min_cell))
write_csv(row, snakemake.output[0])
logging.info("%s", row.to_string(index=False))
