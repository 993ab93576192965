"""Snakemake entry point: the site-stratified Andersen-Gill model (recurstudy.sites)."""

import logging

import pandas as pd

from recurstudy.models import write_csv
from recurstudy.settings import spec_from_settings
from recurstudy.sites import participant_sites, stratified_andersen_gill

snakemake = globals()["snakemake"]
logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(message)s")
spec = spec_from_settings(snakemake.params.spec)
participants = pd.read_parquet(snakemake.input.participants)
participants = participants.assign(site=participant_sites(participants))
cp = pd.read_parquet(snakemake.input.counting_process)
table = stratified_andersen_gill(spec, cp, participants)
write_csv(table, snakemake.output[0])
logging.info("%s", table.to_string(index=False))
