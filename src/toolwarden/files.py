"""Files only the worker's user may read: its home, logs, sockets, ledgers and databases.

Tool output often holds secrets, so directories are 0700 and files 0600 whatever the umask,
and a directory toolwarden keeps is tightened if it was created more open (an older version,
systemd's default `StateDirectoryMode=0755`). One created by another user is refused: in a
shared directory such as /tmp, someone else could have made it first to read what lands there.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) and make it 0700; refuse one that is not ours."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(f"{path} is not a directory (a symlink?): refusing to use it")
    if st.st_uid != os.geteuid():
        raise PermissionError(f"{path} belongs to uid {st.st_uid}, not to this user: refusing it")
    if stat.S_IMODE(st.st_mode) != PRIVATE_DIR:
        path.chmod(PRIVATE_DIR)
    return path


def open_private(path: Path, flags: int) -> int:
    """os.open `path` with `flags` | O_CREAT, the file made 0600 (also if it existed)."""
    descriptor = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        if stat.S_IMODE(os.fstat(descriptor).st_mode) != PRIVATE_FILE:
            os.fchmod(descriptor, PRIVATE_FILE)
    except OSError:
        os.close(descriptor)
        raise
    return descriptor


def private_sqlite_file(database: Path, *, create: bool = True) -> None:
    """Make a SQLite database 0600 before SQLite opens it (`create`: an empty one if missing).

    SQLite creates its -wal, -shm and -journal files with the database file's own mode, so a
    database that exists 0600 keeps them private; companions left by an older version are
    tightened here.
    """
    database.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    if create or database.exists():
        os.close(open_private(database, os.O_RDONLY))
    for suffix in SQLITE_COMPANIONS:
        with contextlib.suppress(FileNotFoundError):
            companion = database.with_name(database.name + suffix)
            if stat.S_IMODE(companion.stat().st_mode) != PRIVATE_FILE:
                companion.chmod(PRIVATE_FILE)
