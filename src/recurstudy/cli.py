"""The `recurstudy` command: simulate, validate, derive, plan lock/check, audit."""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import fields

from recurstudy.simulate import PRESETS, SimulationParams, write_cohort


def _simulate(args: argparse.Namespace) -> int:
    values = dict(PRESETS[args.preset]) if args.preset else {}
    for f in fields(SimulationParams):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    params = SimulationParams(**values)
    try:
        write_cohort(params, args.out, command=shlex.join(["recurstudy", *args.argv]))
    except ValueError as exc:  # parameters the generative model cannot use, named
        print(f"recurstudy simulate: {exc}", file=sys.stderr)
        return 2
    print(f"wrote a cohort of {params.n} participants (seed {params.seed}) to {args.out}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from recurstudy.validate import main_validate

    return main_validate(args.config, args.out, args.clean, base_dir=args.directory)


def _derive(args: argparse.Namespace) -> int:
    from recurstudy.derive import main_derive

    return main_derive(args.config, args.clean, args.out)


def _audit(args: argparse.Namespace) -> int:
    from recurstudy.audit import audit

    return audit(
        args.manifest,
        run_dir=args.directory,
        cores=args.cores,
        snakefile=args.snakefile,
        keep=args.keep,
        rerun=not args.no_rerun,
    )


def _plan(args: argparse.Namespace) -> int:
    from pathlib import Path

    from recurstudy import plan
    from recurstudy.config import load_config

    config = load_config(args.config)
    run_dir = Path(args.directory) if args.directory else Path(args.config).resolve().parent
    path = plan.plan_path(config, run_dir)
    if args.action == "lock":
        record = plan.lock(config, path, today=args.date)
        print(f"plan locked on {record['locked_on']}: {path} (sha256 {record['sha256'][:12]})")
        return 0
    st = plan.status(config, path)
    print(st["statement"])
    return 0 if st["prespecified"] else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `recurstudy` console script."""
    parser = argparse.ArgumentParser(prog="recurstudy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="write a synthetic cohort in the data contract's format")
    sim.add_argument("--out", required=True, help="output folder")
    sim.add_argument("--preset", choices=sorted(PRESETS), help="named parameter set")
    for f in fields(SimulationParams):
        if f.type in ("int", "float"):
            sim.add_argument(
                f"--{f.name.replace('_', '-')}",
                dest=f.name,
                type=int if f.type == "int" else float,
                help=f"default {f.default}",
            )
    sim.set_defaults(func=_simulate)

    val = sub.add_parser("validate", help="validate the cohort tables named in a config")
    val.add_argument("--config", required=True)
    val.add_argument("--out", default="results/validation", help="report folder")
    val.add_argument("--clean", default="results/validated", help="folder for the clean tables")
    val.add_argument("--directory", default=".", help="folder the data paths are relative to")
    val.set_defaults(func=_validate)

    der = sub.add_parser("derive", help="derive the analysis datasets from validated tables")
    der.add_argument("--config", required=True)
    der.add_argument("--clean", default="results/validated")
    der.add_argument("--out", default="results/analysis")
    der.set_defaults(func=_derive)

    pl = sub.add_parser("plan", help="lock the analysis plan, or check a config against it")
    pl.add_argument("action", choices=["lock", "check"])
    pl.add_argument("--config", required=True, help="the study's config.yaml")
    pl.add_argument("--directory", help="run folder (default: the config's folder)")
    pl.add_argument("--date", help="the lock date (YYYY-MM-DD; default: today, UTC)")
    pl.set_defaults(func=_plan)

    aud = sub.add_parser(
        "audit",
        help="check a run folder against its manifest, re-run the workflow and compare hashes",
        description="Check a run folder's inputs and outputs against its manifest, then re-run "
        "the workflow from the inputs in a temporary folder and check the re-run. Exit 0: "
        "everything matches; 1: differences (every file named); 2: the manifest is refused.",
    )
    aud.add_argument("manifest", help="reports/manifest.json of a run")
    aud.add_argument(
        "--no-rerun",
        action="store_true",
        help="only the fast check: the run folder's inputs and outputs against the manifest",
    )
    aud.add_argument("--cores", type=int, default=2)
    aud.add_argument("--directory", help="run directory (default: the manifest's ../..)")
    aud.add_argument("--snakefile", help="Snakefile to re-run (default: this installation's)")
    aud.add_argument("--keep", action="store_true", help="keep the temporary re-run folder")
    aud.set_defaults(func=_audit)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    from recurstudy.config import ConfigError
    from recurstudy.plan import PlanError

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded beside simulated data (truth.json)
    try:
        return args.func(args)
    except (ConfigError, PlanError) as exc:
        print(f"recurstudy: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
