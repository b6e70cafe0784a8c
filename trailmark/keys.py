"""Site keys in ``<data-dir>/keys.json`` (mode 0600): created on first start, reused after.

Presented keys are looked up by their SHA-256 digest (``index_keys`` / ``find_site``), never by the
key itself: a dict or ``==`` comparison of the secret stops at the first differing byte, and its
timing tells an attacker how much of a guess is right. Comparing digests leaks only how much of the
digest matches, which says nothing usable about the key.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

import orjson

from schemas import Site
from trailmark.errors import ConfigError


class KeysError(ConfigError):
    """keys.json is unreadable or malformed."""


def new_site(site_id: str = "default", origins: list[str] | None = None) -> Site:
    return {
        "site_id": site_id,
        "write_key": "wk_" + secrets.token_urlsafe(18),
        "read_key": "rk_" + secrets.token_urlsafe(24),
        "admin_key": new_admin_key(),
        "origins": origins or ["*"],
    }


def new_admin_key() -> str:
    """A site's admin key: erase and export contacts (never read or write events)."""
    return "ak_" + secrets.token_urlsafe(24)


def key_digest(key: str) -> bytes:
    """The SHA-256 digest a key is indexed and looked up by."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def index_keys(sites: Iterable[Site], kind: Literal["write_key", "read_key", "admin_key"]) -> dict[bytes, Site]:
    """The sites by the digest of their write, read or admin key, for ``find_site`` (a site without
    that key is left out)."""
    return {key_digest(key): s for s in sites if isinstance(key := s.get(kind), str) and key}


def find_site(keys_by_digest: Mapping[bytes, Site], presented: object) -> Site | None:
    """The site whose key (indexed by ``index_keys``) is ``presented``, in time that does not
    depend on how much of a wrong key matches; None for a wrong, empty or non-string key."""
    if not isinstance(presented, str) or not presented:
        return None
    return keys_by_digest.get(key_digest(presented))


def secure_data_dir(data_dir: Path) -> None:
    """Make the data folder private to this user: the folder 0700 (created so, or changed), and the
    process umask 077, so that every file created from now on (event log, chDB parts, spool) is 0600
    and every folder 0700. The data holds visitors' personal data and the keys."""
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(data_dir, 0o700)


def load_or_create(data_dir: Path) -> tuple[list[Site], bool]:
    """The sites, and whether the file was created just now. Every server command starts here,
    before anything else opens the data folder: it is made private first (``secure_data_dir``)."""
    secure_data_dir(data_dir)
    path = data_dir / "keys.json"
    if path.exists():
        try:
            data = orjson.loads(path.read_bytes())
            sites: list[Site] = data["sites"]
            for s in sites:
                _ = (s["site_id"], s["write_key"], s["read_key"])
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise KeysError(f"{path} is not a valid keys file: {exc}") from exc
        missing = [s for s in sites if not s.get("admin_key")]
        for s in missing:  # keys files from before admin keys existed get one per site
            s["admin_key"] = new_admin_key()
        if missing:
            _write_keys(path, {**data, "sites": sites})
        return sites, False
    sites = [new_site()]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(orjson.dumps({"sites": sites}, option=orjson.OPT_INDENT_2))
    return sites, True


def _write_keys(path: Path, data: object) -> None:
    """Replace keys.json atomically (a temporary file, fsynced, renamed over it), mode 0600: a crash
    leaves the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps(data, option=orjson.OPT_INDENT_2))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
