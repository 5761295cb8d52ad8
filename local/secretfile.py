"""Files that hold secrets, created with their final mode from the start.

A file written first and restricted after (``write_text`` then ``chmod``) is readable by every user for the
moment in between, and stays so if the writer dies there. Here the file is created by ``os.open`` with mode
0600 beside its final path and renamed over it when complete: no reader ever sees it wider, or half written.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

SECRET_MODE = 0o600
SECRET_DIR_MODE = 0o700


def write_secret(path: Path, data: str | bytes, owner: str | None = None, mode: int = SECRET_MODE) -> Path:
    """Write ``data`` to ``path`` (created ``mode``, by default 0600; owned by ``owner`` when given), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits off the mode asked for
        if owner:
            shutil.chown(tmp, owner, owner)
        with os.fdopen(fd, "wb") as f:
            fd = -1
            f.write(body)
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    return path


def secret_dir(path: Path, owner: str | None = None) -> Path:
    """A directory only its owner can enter (0700)."""
    path.mkdir(parents=True, exist_ok=True, mode=SECRET_DIR_MODE)
    path.chmod(SECRET_DIR_MODE)
    if owner:
        shutil.chown(path, owner, owner)
    return path
