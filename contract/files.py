"""Reading and writing the store's files safely: atomic, durable writes and reads that never block, never run
code and never take more than a small file's worth of memory (issues #11 and #19).  Every module that touches a
store's files goes through these; they know nothing of what the files mean (``contract.store`` does).
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

# errnos that mean "this filesystem will not take the write", not "this trial is broken"
STORE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO})


class StoreWriteError(OSError):
    """The result store refused a write (a full disk, a read-only directory): ``filename`` says where,
    ``what`` what was being written.  Not the trial's fault: its status becomes ``interrupted``."""

    def __init__(self, err: OSError, path: Path | str, what: str):
        super().__init__(err.errno, err.strerror or str(err), str(getattr(err, "filename", None) or path))
        self.what = what

    def __str__(self) -> str:
        return f"could not write {self.filename} ({self.what}): {self.strerror}"


def current_umask() -> int:
    """The process's umask, read without changing it (``os.umask`` can only be read by setting it, which races
    with other threads creating files); from /proc where there is one."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str, create_parent: bool = True) -> None:
    """Write via a temp file and rename, so a reader never sees half a file.  The file gets the mode an ordinary
    ``open`` would give it (0o666 less the umask): ``mkstemp`` makes it 0600, readable by its writer alone, and a
    colleague's analysis or planner then reads the store as empty (issue #19).  ``create_parent=False``: a
    missing directory is an error (FileNotFoundError), never made again (a trial directory that vanished)."""
    if create_parent:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~current_umask())
            handle.write(text)
            handle.flush()
            # durable before the rename: after a power loss the name never points at an empty file (#19)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def overwrite_in_place(path: Path, text: str) -> bool:
    """Rewrite an existing small file without allocating a new one (its block is already the file's)."""
    data = text.encode()
    try:
        if not path.exists() or len(data) > max(path.stat().st_size, 4096):
            return False
        with path.open("r+b") as handle:
            handle.write(data)
            handle.truncate()
        return True
    except OSError:
        return False


# The largest small file (status.json, trial.json, config.yaml, a manifest) a reader takes from a store: the
# worker writes a few KiB; a larger one was put there by someone else and costs its trial, not the reader's memory.
MAX_SMALL_FILE_BYTES = 1 << 20


class NotARegularFile(OSError):
    """A store path that is not a regular file (a FIFO, a device, a socket, a directory): never read, since
    reading a FIFO blocks forever (issue #19); or a small file too large to be the worker's."""

    def __init__(self, path: Path | str, what: str):
        super().__init__(errno.EINVAL, what, str(path))

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"


def open_regular(path: Path | str) -> int:
    """A read-only descriptor of ``path`` once it is known to be a regular file.  O_NONBLOCK: opening a FIFO
    with no writer would otherwise block before fstat could look at it.  Raises NotARegularFile (an OSError)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(path, f"{_file_kind(mode)}, not a regular file: not read")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular_bytes(path: Path | str, limit: int | None = None) -> bytes:
    """The bytes of a regular file (see ``open_regular``); over ``limit`` bytes raises NotARegularFile."""
    with os.fdopen(open_regular(path), "rb") as handle:
        if limit is not None and os.fstat(handle.fileno()).st_size > limit:
            raise NotARegularFile(path, f"larger than {limit:,} bytes: not read")
        return handle.read()


def read_regular_text(path: Path | str, limit: int | None = None) -> str:
    """Text (UTF-8) of a regular file; a file that is not text raises UnicodeDecodeError (a ValueError)."""
    return read_regular_bytes(path, limit).decode()


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A JSON file holding an object, or None when it is missing, unreadable, torn, not a regular file or
    something else: every JSON file of the store (status, trial.json, manifests) is read so, and a bad one never
    stops a reader."""
    try:
        value = json.loads(read_regular_text(path, MAX_SMALL_FILE_BYTES))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
