"""Small file helpers shared by every stage: atomic writes, canonical JSON, hashing."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable


_UMASK = os.umask(0)
os.umask(_UMASK)


class CvreproError(Exception):
    """An error a user can fix: the CLI prints the message and exits non-zero."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file.
    A file replaced keeps its permission bits. An OSError (no space, file too large,
    read-only or forbidden folder) names `path`, not the temporary file, and leaves nothing."""
    atomic_write_chunks(path, (data,))


def atomic_write_chunks(path: str | os.PathLike, chunks: Iterable[bytes]) -> None:
    """`atomic_write_bytes` of the chunks' concatenation, never all in memory at once (a large cache file)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_UMASK  # mkstemp creates 0600; give the usual permissions
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise type(e)(e.errno, e.strerror, str(path)) from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace: the form we hash."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Human-readable JSON with sorted keys, written atomically."""
    atomic_write_text(path, json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return parse_json(path, read_bytes(path))


def read_bytes(path: str | os.PathLike) -> bytes:
    """The file's bytes; CvreproError naming it when it is missing."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise CvreproError(f"{path}: file not found") from None


def json_text(path: str | os.PathLike, data: bytes) -> str:
    """The text of the JSON file `path` whose bytes are `data` (UTF-8, or UTF-16/32 as `json.loads` accepts).
    Decode first, drop the bytes, then parse: a large index is then never in memory three times."""
    try:
        return data.decode(json.detect_encoding(data), "surrogatepass")
    except UnicodeDecodeError as e:
        raise CvreproError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}, e.g. a latin-1 file): "
                           "save it as UTF-8") from None


def parse_json(path: str | os.PathLike, data: bytes | str) -> Any:
    """`data`, the bytes or text of the JSON file `path`, parsed; CvreproError naming the file and the place of
    an error."""
    if isinstance(data, bytes):
        data = json_text(path, data)
    try:
        return json.loads(data)
    except json.JSONDecodeError as e:
        raise CvreproError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
