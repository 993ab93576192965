"""Snakemake entry point: one chunk of power replicates for one claim (recurstudy.power), with
informative dropout when the rule's dropout_link is not 0."""

import json
import logging

from recurstudy.models import write_csv
from recurstudy.power import simulate_from_inputs

snakemake = globals()["snakemake"]
logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(message)s")
params = snakemake.params
with open(snakemake.input[0]) as fh:
    design = json.load(fh)
first = int(snakemake.wildcards.chunk) * params.chunk_size
chunk = range(first, min(first + params.chunk_size, params.replicates))
reps = simulate_from_inputs(
    json.loads(params.inputs), design, chunk, params.seed, dropout_link=float(params.dropout_link)
)
write_csv(reps, snakemake.output[0])
logging.info("%d replicates, %d converged", len(reps), int(reps["converged"].sum()))
