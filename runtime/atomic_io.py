"""Write files so that a crash never leaves a half-written one: temporary file, fsync, rename."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside `path`; on a clean exit it replaces `path` in one rename.

    On an exception the temporary file is removed and any existing `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)  # `--out runs/x.json` on a fresh clone has no runs/ yet
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _mode_for(path))  # mkstemp makes 0600; give what open() would have given
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _mode_for(path: Path) -> int:
    """The permission bits `path` keeps when it exists, else 0666 less the process umask."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_json_atomic(path: str | os.PathLike, obj: object) -> None:
    """Serialize `obj` to JSON at `path` atomically (indented, stable key order, trailing newline)."""
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    with atomic_open(path, "w") as handle:
        handle.write(text)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable; not every platform can open a folder, which is then skipped."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def replace_folder(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Put the finished folder `tmp` at `out`, replacing any folder there: two renames (the old one aside,
    the new one in), then the old one is deleted; a crash in between leaves the old folder beside `out`."""
    import shutil

    tmp, out = Path(tmp), Path(out)
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    if old.exists():
        shutil.rmtree(old)
