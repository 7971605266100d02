"""Private files on local disk: 0700 folders, 0600 files written atomically.

Shared by everything that keeps a secret on disk (the default key manager's wrapped private
keys, the trust domain server's identity, state and API token, spirlctl's login file, the
SQLite data folder, the emulators' TLS files), so all survive crashes and concurrent writers
the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from pathlib import Path

__all__ = ["ensure_private_dir", "write_private_atomically"]

log = logging.getLogger(__name__)


def ensure_private_dir(path: Path) -> None:
    """Create `path` (and parents) if missing and make sure it is 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777
    if mode != 0o700:
        # An existing folder may have been made with a looser umask; secrets need 0700.
        os.chmod(path, 0o700)
        log.info("tightened permissions of %s from %o to 700", path, mode)


def write_private_atomically(path: Path, data: bytes) -> os.stat_result:
    """Write `data` to `path` via a 0600 temp file, fsync and rename; returns the written
    file's stat (the rename keeps its inode, mtime and size).

    The temp name is random, so concurrent writers (threads or processes) never share one:
    each rename installs one complete file and the last one wins.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            stat = os.fstat(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    # fsync the folder so the rename itself survives a crash.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return stat
