"""Site keys in ``<data-dir>/keys.json`` (mode 0600): created on first start, reused after."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import orjson

from schemas import Site


class KeysError(ValueError):
    """keys.json is unreadable or malformed."""


def new_site(site_id: str = "default", origins: list[str] | None = None) -> Site:
    return {
        "site_id": site_id,
        "write_key": "wk_" + secrets.token_urlsafe(18),
        "read_key": "rk_" + secrets.token_urlsafe(24),
        "origins": origins or ["*"],
    }


def load_or_create(data_dir: Path) -> tuple[list[Site], bool]:
    """The sites, and whether the file was created just now."""
    path = data_dir / "keys.json"
    if path.exists():
        try:
            data = orjson.loads(path.read_bytes())
            sites: list[Site] = data["sites"]
            for s in sites:
                _ = (s["site_id"], s["write_key"], s["read_key"])
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise KeysError(f"{path} is not a valid keys file: {exc}") from exc
        return sites, False
    data_dir.mkdir(parents=True, exist_ok=True)
    sites = [new_site()]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(orjson.dumps({"sites": sites}, option=orjson.OPT_INDENT_2))
    return sites, True
