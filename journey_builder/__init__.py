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

import importlib.machinery
import importlib.util
import sys
import warnings
from pathlib import Path

from trailmark.builds import PURE_PYTHON, build_state

NATIVE_MODULES = ("core",)
"""The modules of this package that ``make native`` compiles."""
__all__ = ["NATIVE_MODULES", "PURE_PYTHON", "core_form", "native_state"]


def native_state(directory: Path, module: str) -> str:
    """``compiled`` (a compiled ``module`` built from its source as it is now), ``stale`` (one built
    from another source, or with no record of its source) or ``absent`` (none): see
    ``trailmark.builds.build_state``."""
    return build_state(
        (directory / f"{module}{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES),
        directory / f"{module}_native.sha256",
        [directory / f"{module}.py"],
    )


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
