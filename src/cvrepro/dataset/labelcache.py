"""The label side of the last snapshot, kept so that the next one does not parse the same labels again.

Most snapshots of a large dataset change images, not labels: photos re-exported, a few replaced. When the
labels index is byte for byte the one of the last successful snapshot, and nothing else its label side was
computed from changed (the task, `dataset.invalid`, `dataset.ignore_index`, the code that parses and checks
labels), that snapshot's manifest is reused for everything but the images: class map, each image's id, path,
declared size, attributes and labels hash, and the statistics. Every image is still checked (through the
image check cache, `listing.CheckCache`, so only new or changed ones are opened) and the md5s, sizes and the
`snapshot_id` are computed afresh.

Only for tasks whose labels all live in the index (`Task.labels_in_index`): segmentation's masks are files
of their own. One JSON file beside the image check cache, written atomically after a snapshot that parsed
its labels (a killed or concurrent snapshot leaves the old file or the new one); a missing or unreadable
file, or one under another key, only means the labels are parsed again.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from cvrepro.core.fileio import atomic_write_chunks

FORMAT = "cvrepro.snapshot-labels/1"
# The code a manifest's label side comes from: every module of these packages (a folder, so that a module added
# there is covered without a list to keep up), plus the modules of the task's own classes.
CODE_PACKAGES = (Path(__file__).resolve().parents[1] / "core", Path(__file__).resolve().parent)


def labels_key(index_bytes: bytes, task, invalid: str, ignore_index: int) -> str | None:
    """sha256 of everything the label side depends on; None for a task with labels outside the index."""
    if not task.labels_in_index:
        return None
    sources = [p for folder in CODE_PACKAGES for p in sorted(folder.glob("*.py"))]
    for cls in type(task).__mro__[:-1]:  # object has no source
        source = getattr(sys.modules.get(cls.__module__), "__file__", None)
        if not source:  # a task defined where there is no source file to hash (an interactive session)
            return None
        sources.append(Path(source))
    h = hashlib.sha256()
    for part in (FORMAT, task.name, invalid, str(ignore_index)):
        h.update(part.encode("utf-8") + b"\0")
    for source in dict.fromkeys(sources):
        h.update(source.read_bytes())
    h.update(index_bytes)
    return h.hexdigest()


class LabelCache:
    def __init__(self, path: Path | None, key: str | None):
        self.path = Path(path) if path and key else None
        self.key = key

    def load(self) -> dict | None:
        """The last manifest whose labels had this key, or None."""
        if self.path is None:
            return None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))  # text, not bytes: one copy fewer in memory
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("key") != self.key:
            return None
        manifest = data.get("manifest")
        return manifest if isinstance(manifest, dict) and manifest.get("files") else None

    def save(self, manifest: dict) -> None:
        if self.path is None:
            return
        try:
            atomic_write_chunks(self.path, _json_chunks({"format": FORMAT, "key": self.key}, manifest))
        except OSError:  # only a cache: the next snapshot parses the labels again (the image check cache, saved
            pass  # first, already warns about a read-only checkout; a full disk is reported by the manifest's write)


def _json_chunks(head: dict, manifest: dict, per_chunk: int = 1000):
    """The JSON text of {**head, "manifest": manifest} in pieces of `per_chunk` files (as json.dumps would write it,
    but never the whole text in memory: ~250 bytes an image)."""
    def dumps(obj) -> str:
        return json.dumps(obj, separators=(",", ":"))

    rest = {k: v for k, v in manifest.items() if k != "files"}
    yield f'{dumps(head)[:-1]},"manifest":{dumps(rest)[:-1]}{"," if rest else ""}"files":['.encode("utf-8")
    files = manifest["files"]
    for start in range(0, len(files), per_chunk):
        yield (("," if start else "") + dumps(files[start:start + per_chunk])[1:-1]).encode("utf-8")
    yield b"]}}"
