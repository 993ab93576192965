"""Snakemake entry point: one chunk of power replicates for one claim (recurstudy.power)."""

import json
import logging

from recurstudy.models import write_csv
from recurstudy.power import simulate_replicates

snakemake = globals()["snakemake"]
logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(message)s")
cfg = snakemake.config
claim = {c["id"]: c for c in cfg["claims"]}[snakemake.wildcards.claim]
with open(snakemake.input[0]) as fh:
    design = json.load(fh)
size, total = cfg["power"]["chunk_size"], cfg["power"]["replicates"]
first = int(snakemake.wildcards.chunk) * size
reps = simulate_replicates(
    claim, design, cfg, range(first, min(first + size, total)), cfg["power"]["seed"]
)
write_csv(reps, snakemake.output[0])
logging.info("%d replicates, %d converged", len(reps), int(reps["converged"].sum()))
