"""Writing files so that a crash never leaves a half-written one behind.

Every writer in gptlib (checkpoints, tokenizers, token files) goes through :func:`atomic_write`:
the data goes to a temporary file in the target's directory, is flushed to disk, and only then
renamed over the target with ``os.replace``, which POSIX and Windows both perform atomically.
A reader therefore sees either the old file or the new one, never a mixture; if the writer
raises, the temporary file is removed and the old file is untouched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file or (on POSIX) a directory entry to disk, so a rename cannot overtake data."""
    with contextlib.suppress(OSError):  # directories cannot be opened on Windows
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "wb", encoding: str | None = None
) -> Iterator[IO]:
    """Open a temporary file for writing that replaces ``path`` when the block ends cleanly.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
    >>> with atomic_write(target, "w", encoding="utf-8") as f:
    ...     _ = f.write("kept")
    >>> try:
    ...     with atomic_write(target, "w", encoding="utf-8") as f:
    ...         _ = f.write("lost")
    ...         raise RuntimeError("crash mid-write")
    ... except RuntimeError:
    ...     pass
    >>> target.read_text(encoding="utf-8"), sorted(p.name for p in target.parent.iterdir())
    ('kept', ['note.txt'])
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write opens files for writing only ('w' or 'wb'), got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would give
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def dataclass_from_dict(cls: type[T], fields: dict[str, Any]) -> T:
    """Build the dataclass ``cls`` from a dict read from JSON, naming any unknown field.

    A typo in a config file (``n_layers`` for ``n_layer``) fails loudly instead of being ignored.
    Lists become tuples where the field's default is a tuple (JSON has no tuples).
    """
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")
    return cls(
        **{
            k: tuple(v) if isinstance(known[k].default, tuple) and isinstance(v, list) else v
            for k, v in fields.items()
        }
    )
