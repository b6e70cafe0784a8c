"""Compiled forms of Python modules (``make native``), trusted only while they match their sources.

Two builds use this: ``journey_builder.core`` compiled by mypyc (journey_builder/__init__.py) and
the Rust module trailmark/native (trailmark/compiled.py). Each build writes the SHA-256 of the
sources it was built from beside what it built; a process uses the compiled form only while the
sources as they are now have that digest, so code compiled from an older checkout never runs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

PURE_PYTHON = os.environ.get("TRAILMARK_PURE_PYTHON", "") not in ("", "0")
"""``TRAILMARK_PURE_PYTHON`` as this process started: run every compiled module's Python form."""


def sources_digest(sources: Sequence[Path]) -> str | None:
    """The SHA-256 of ``sources``' bytes, read one after another (None: one of them is not there,
    as in a wheel that ships the compiled form without its sources)."""
    digest = hashlib.sha256()
    try:
        for path in sources:
            digest.update(path.read_bytes())
    except OSError:
        return None
    return digest.hexdigest()


def build_state(binaries: Iterable[Path], record: Path, sources: Sequence[Path]) -> str:
    """``compiled`` (one of ``binaries`` is there and ``record`` holds the digest of ``sources`` as
    they are now, or they are not shipped), ``stale`` (built from other sources, or with no record
    of them) or ``absent`` (nothing built)."""
    if not any(path.exists() for path in binaries):
        return "absent"
    try:
        built_from = record.read_text().strip()
    except OSError:
        return "stale"
    now = sources_digest(sources)
    return "compiled" if now is None or built_from == now else "stale"
