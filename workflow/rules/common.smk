# Configuration: the demo config unless --configfile is given (then only that file counts, so
# that none of the demo's data paths leak into a user's study), validated against the schema.
from recurstudy.config import validate_config


if not config:

    configfile: "config/config.yaml"


validate_config(config)

ANALYSIS = ["first_episode", "counting_process", "counts"]
CLEAN = ["participants", "episodes"] + (
    ["pain_scores"] if config["data"].get("pain_scores") else []
)


def data_inputs(wildcards=None):
    """The cohort tables named in the config."""
    return {name: config["data"][name] for name in CLEAN}

