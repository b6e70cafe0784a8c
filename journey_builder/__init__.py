"""The journey builder (``builder``, its logic in ``core``) and the read API.

``journey_builder.core`` is compiled to a C extension by mypyc (``make native``, run by ``make run``
and ``make test``): 7–13 % more events per CPU second for the builder (bench/RESULTS.md
2026-12-05 19:55–20:27). The compiled module is used only while it matches the source: the build writes
the SHA-256 of the core.py it compiled next to it (``core_native.sha256``), and when the two differ
(core.py edited or checked out since) or ``TRAILMARK_PURE_PYTHON=1`` is set, core.py is loaded
instead, so stale compiled code never runs. Without a C compiler the build is skipped and core.py
runs as it is.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from pathlib import Path

NATIVE_MODULES = ("core",)
"""The modules of this package that ``make native`` compiles."""
PURE_PYTHON = os.environ.get("TRAILMARK_PURE_PYTHON", "") not in ("", "0")
"""``TRAILMARK_PURE_PYTHON`` as this process started: run the compiled modules as Python."""


def native_state(directory: Path, module: str) -> str:
    """``compiled`` (a compiled ``module`` built from its source as it is now), ``stale`` (one built
    from another source, or with no record of its source) or ``absent`` (none)."""
    if not any((directory / f"{module}{suffix}").exists() for suffix in importlib.machinery.EXTENSION_SUFFIXES):
        return "absent"
    try:
        built_from = (directory / f"{module}_native.sha256").read_text().strip()
        source = hashlib.sha256((directory / f"{module}.py").read_bytes()).hexdigest()
    except OSError:
        return "stale"
    return "compiled" if built_from == source else "stale"


def _load_source(package: str, directory: Path, module: str) -> None:
    """Import ``package.module`` from its .py file, not from the compiled module beside it."""
    name = f"{package}.{module}"
    loader = importlib.machinery.SourceFileLoader(name, str(directory / f"{module}.py"))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    try:
        loader.exec_module(loaded)
    except BaseException:
        del sys.modules[name]
        raise
    globals()[module] = loaded


def _choose() -> None:
    here = Path(__file__).parent
    for module in NATIVE_MODULES:
        state = native_state(here, module)
        if state == "absent" or (state == "compiled" and not PURE_PYTHON):
            continue
        if state == "stale" and not PURE_PYTHON:
            warnings.warn(
                f"journey_builder/{module}.py changed after it was compiled: running it as Python"
                " (run `make native` to compile it again)",
                RuntimeWarning,
                stacklevel=2,
            )
        _load_source(__name__, here, module)


_choose()


def core_form() -> str:
    """How ``journey_builder.core`` runs in this process: ``compiled (mypyc)`` or ``Python``."""
    from journey_builder import core

    return "Python" if (core.__file__ or "").endswith(".py") else "compiled (mypyc)"
