"""Snakemake entry point: evaluate the configured claims (recurstudy.claims)."""

import json
from pathlib import Path

import pandas as pd

from recurstudy.claims import add_power, evaluate_claims, sensitivity_agreement, write_claims
from recurstudy.models import write_csv
from recurstudy.settings import load_settings

snakemake = globals()["snakemake"]
estimates = pd.read_csv(snakemake.input.estimates)
settings = load_settings(snakemake.params.settings, "claims")
table = evaluate_claims(settings, estimates, "results/models")
power = {Path(p).stem: json.loads(Path(p).read_text()) for p in snakemake.input.power}
write_claims(add_power(table, power), snakemake.output.csv, snakemake.output.json)
write_csv(sensitivity_agreement(settings, estimates, table), snakemake.output.agreement)
