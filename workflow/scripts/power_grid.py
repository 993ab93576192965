"""Snakemake entry point: one point of a claim's minimum-detectable-effect grid: replicates
simulated under the grid's reduction and fitted with the claim's model (recurstudy.power)."""

import json
import logging

from recurstudy.models import write_csv
from recurstudy.power import simulate_from_inputs

snakemake = globals()["snakemake"]
logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(message)s")
params = snakemake.params
with open(snakemake.input[0]) as fh:
    design = json.load(fh)
reduction = float(params.reduction)
inputs = {**json.loads(params.inputs), "claimed": reduction}
reps = simulate_from_inputs(inputs, design, range(params.replicates), params.seed, reduction)
write_csv(reps, snakemake.output[0])
logging.info(
    "reduction %g: %d replicates, %d converged", reduction, len(reps), int(reps["converged"].sum())
)
