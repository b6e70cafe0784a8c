"""journey_builder.core compiled by mypyc (``make native``): the compiled module runs only while it
was built from core.py as it is now, core.py runs in its place otherwise (stale build, none, or
``TRAILMARK_PURE_PYTHON=1``), and both forms pass the core's unit tests."""

from __future__ import annotations

import hashlib
import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import journey_builder
import journey_builder.core
from journey_builder import core_form, native_state
from tests.journeys.test_core import DictLookups, event, new_core, run, sid

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "journey_builder"
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def _package(tmp_path: Path, source: bytes, *, compiled: bool, built_from: bytes | None) -> Path:
    tmp_path.mkdir()
    (tmp_path / "core.py").write_bytes(source)
    if compiled:
        (tmp_path / f"core{SUFFIX}").write_bytes(b"\x7fELF")  # its presence is what counts here
    if built_from is not None:
        (tmp_path / "core_native.sha256").write_text(hashlib.sha256(built_from).hexdigest() + "\n")
    return tmp_path


def test_a_compiled_module_counts_only_while_it_matches_its_source(tmp_path: Path) -> None:
    src = b"X = 1\n"
    assert native_state(_package(tmp_path / "a", src, compiled=False, built_from=None), "core") == "absent"
    assert native_state(_package(tmp_path / "b", src, compiled=True, built_from=src), "core") == "compiled"
    # core.py edited (or another commit checked out) after the build
    assert native_state(_package(tmp_path / "c", b"X = 2\n", compiled=True, built_from=src), "core") == "stale"
    # a compiled module with no record of what it was built from is not trusted
    assert native_state(_package(tmp_path / "d", src, compiled=True, built_from=None), "core") == "stale"
    # a record but no compiled module: nothing to use
    assert native_state(_package(tmp_path / "e", src, compiled=False, built_from=src), "core") == "absent"
    # shipped without its source (a wheel of the compiled form): nothing to compare, the build is used
    shipped = _package(tmp_path / "f", src, compiled=True, built_from=src)
    (shipped / "core.py").unlink()
    assert native_state(shipped, "core") == "compiled"


def test_this_checkout_imports_the_form_its_build_state_says() -> None:
    state = native_state(PACKAGE, "core")
    pure = journey_builder.PURE_PYTHON  # as this process started (the tests' fixture clears TRAILMARK_*)
    loaded = Path(journey_builder.core.__file__ or "")
    if state == "compiled" and not pure:
        assert loaded.name.endswith(SUFFIX), loaded
        assert core_form() == "compiled (mypyc)"  # what `trailmark up` prints
    else:
        assert loaded.name == "core.py", loaded
        assert core_form() == "Python"
    assert loaded.parent == PACKAGE


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_core_unit_tests_pass_on_core_py_run_as_python() -> None:
    """The fallback is the same logic: tests/journeys/test_core.py again, on core.py (this
    process runs whichever form the checkout's build gives)."""
    got = _run(
        "import sys, pytest, journey_builder.core as c\n"
        "assert c.__file__.endswith('core.py'), c.__file__\n"
        "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', 'tests/journeys/test_core.py']))",
        TRAILMARK_PURE_PYTHON="1",
    )
    assert got.returncode == 0, got.stdout[-3000:] + got.stderr[-3000:]
    assert " passed" in got.stdout and "failed" not in got.stdout


@pytest.mark.skipif(core_form() == "Python", reason="core.py runs as Python here")
def test_the_compiled_core_takes_the_json_text_of_the_enriched_topic() -> None:
    """Compiled code checks the declared types of what it reads: an event as the enriched topic
    carries it, its JSON-object fields as text, goes through it (schemas.RawEvent types them as
    object or text) and its text is stored as it came."""
    core, lookups = new_core(), DictLookups()
    ev = event(
        "track",
        "a",
        "10:00:00",
        "m1",
        event="Signed Up",
        properties='{"plan":"pro"}',
        traits="{}",
        context='{"consent":[1,0,1]}',
        extra='{"channel":"server"}',
    )
    out = run(core, lookups, ev)
    assert out.events["properties"] == ['{"plan":"pro"}']
    assert out.events["extra"] == ['{"channel":"server"}']
    assert out.events["consent"] == ["granted"]
    assert [s.session_id for _, s in out.sessions.values()] == [sid("a", "m1")]


def test_a_stale_build_runs_core_py_and_says_so(tmp_path: Path) -> None:
    """A copy of the package whose compiled module was built from another core.py: core.py is
    imported, with a warning naming `make native`."""
    if native_state(PACKAGE, "core") != "compiled":
        pytest.skip("core.py is not compiled here (make native)")
    copy = tmp_path / "journey_builder"
    copy.mkdir()
    for f in PACKAGE.iterdir():
        if f.is_file():
            (copy / f.name).write_bytes(f.read_bytes())
    (copy / "core.py").write_bytes((PACKAGE / "core.py").read_bytes() + b"\nEDITED = True\n")
    got = _run(
        "import warnings, sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import journey_builder.core as c\n"
        f"assert c.__file__.startswith({str(copy)!r}), c.__file__\n"
        "assert c.__file__.endswith('core.py') and c.EDITED\n"
        "assert any('make native' in str(x.message) for x in w), [str(x.message) for x in w]\n"
        "print('ok')",
    )
    assert got.returncode == 0 and got.stdout.strip() == "ok", got.stdout + got.stderr


def test_make_native_compiled_the_core_where_a_c_compiler_is() -> None:
    """``make native`` falls back to Python only for want of a C compiler. Where one is, a failed
    build is a fault to see, not a skip: a venv whose setuptools could not read pyproject.toml left
    the core as Python (and its compiled-core checks skipped) unnoticed."""
    record = PACKAGE / "core_native.sha256"
    if not record.exists() or shutil.which("cc") is None:
        pytest.skip("make native has not run here, or no C compiler")
    log = ROOT / ".cache" / "native.log"
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no .cache/native.log)"
    assert record.read_text().strip() != "none", f"make native failed with a C compiler present:\n{tail}"
