"""Modules imported on first use, so that importing recurstudy stays cheap.

``scipy.stats`` alone takes about 1.3 s to import on the 2-core benchmark machine, and every
model module needs it only inside its functions. Snakemake imports every model module at parse
time (the registry of model kinds), and every job imports its model's package: with the import
at module level, a run paid it once at start-up and once per job, even for jobs that never call
it (benchmarks/run.py, the cgd case). :func:`lazy_import` is the standard library's recipe
(``importlib.util.LazyLoader``): the module object exists at once, its code runs when an
attribute is first read.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_import(name: str) -> ModuleType:
    """Module `name`, loaded when one of its attributes is first read (already-imported
    modules are returned as they are)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:  # pragma: no cover - a broken installation
        raise ModuleNotFoundError(f"no module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
