"""The data folder of a running ``trailmark up`` is private: the folder 0700, every file 0600 (no
group or other bits anywhere), whatever the umask it was started with."""

from __future__ import annotations

import os
import stat
import uuid

from tests.conftest import Server


def test_data_folder_and_files_are_private(server: Server) -> None:
    anon = f"perm-{uuid.uuid4()}"
    assert server.post("/v1/batch", {"batch": [{"type": "page", "anonymousId": anon}]}).status_code == 200
    server.wait_for(f"SELECT count() FROM trailmark.events WHERE anonymous_id = '{anon}'", 1)
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
    seen = 0
    for folder, dirs, files in os.walk(server.data_dir):
        for name in [*dirs, *files]:
            path = os.path.join(folder, name)
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            if stat.S_ISLNK(os.lstat(path).st_mode):
                continue
            assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
            seen += 1
    assert seen > 10  # keys.json, the event log, chDB's folders and parts
