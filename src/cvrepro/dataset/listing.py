"""What is already known about data/raw: the per-file md5s DVC recorded at `dvc add`, read
from its cache so snapshot does not hash every image a second time, and the results of
earlier snapshots' checks (`CheckCache`), so an unchanged image is never opened again."""

from __future__ import annotations

import configparser
import json
import os
import sys
from pathlib import Path

import yaml

from cvrepro.core.fileio import atomic_write_text
from cvrepro.core.paths import RAW_DIR


def _dvc_cache_dir(root: Path) -> Path:
    """The local cache: `.dvc/cache` unless `dvc cache dir` moved it (relative paths are relative to .dvc/)."""
    cache = root / ".dvc" / "cache"
    for name in ("config", "config.local"):  # config.local wins, so read it last
        parser = configparser.ConfigParser()
        try:
            parser.read(root / ".dvc" / name)
        except configparser.Error:
            continue
        if parser.has_option("cache", "dir"):
            cache = root / ".dvc" / Path(parser.get("cache", "dir").strip("'\""))
    return cache


def dvc_listing(root: Path = Path(".")) -> dict[str, str] | None:
    """relpath (under data/raw, posix) → md5, as DVC recorded it at `dvc add data/raw`; None if unavailable.

    Reads `data/raw.dvc` for the directory hash (`<md5>.dir`, DVC 3 `hash: md5`,
    i.e. the plain md5 of the bytes) and loads that directory object from the
    local cache: `<cache>/files/md5/<first 2 hex>/<rest>.dir`, a JSON list of
    {"md5", "relpath", ...}.
    """
    root = Path(root)
    try:
        with (root / f"{RAW_DIR}.dvc").open() as f:
            out = yaml.safe_load(f)["outs"][0]
        dir_md5 = out["md5"]
        # DVC 2 files (no `hash: md5`) used md5 with dos2unix on text files: not the bytes' md5.
        if out.get("hash") != "md5" or not dir_md5.endswith(".dir"):
            return None
        obj = _dvc_cache_dir(root) / "files" / "md5" / dir_md5[:2] / dir_md5[2:]
        with obj.open("rb") as f:
            entries = json.load(f)
        return {e["relpath"]: e["md5"] for e in entries}  # DVC writes posix relpaths
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError, yaml.YAMLError):
        return None


def files_on_disk(raw_dir: Path) -> set[str]:
    """Every file under raw_dir as a posix relpath (symlinked dirs not followed, like the listing)."""
    found = set()
    for dirpath, _dirs, files in os.walk(raw_dir):
        rel = os.path.relpath(dirpath, raw_dir).replace(os.sep, "/")
        prefix = "" if rel == "." else rel + "/"
        found.update(prefix + name for name in files)  # plain strings: pathlib costs ~10 µs a file
    return found


def usable_listing(raw_dir: Path, listing: dict[str, str] | None) -> dict[str, str]:
    """The DVC listing if it lists exactly the files on disk, else {} (stale: hash everything ourselves)."""
    if not listing:
        return {}
    return listing if set(listing) == files_on_disk(raw_dir) else {}


class CheckCache:
    """Results of earlier checks of images that passed: relpath -> (md5, size, mtime_ns, width, height).

    An image is taken as checked, without being opened, when its size and mtime are those recorded
    with its md5 (the way DVC's own state database trusts a file), and, where DVC's listing is used,
    that listing gives the same md5: its content hash has not changed since it last decoded cleanly.
    Anything else (a new file, an edited one, a touched one) is read, hashed and decoded again.

    One tab-separated text file, written atomically after each snapshot (a killed or concurrent
    snapshot leaves the old or the new file, never half of one); unreadable lines are ignored,
    a missing or unreadable file just means every image is checked.
    """

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        self.entries: dict[str, tuple[str, int, int, int, int]] = {}
        if self.path is None:
            return
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return
        for line in text.splitlines():
            parts = line.split("\t")
            if len(parts) == 6 and len(parts[1]) == 32:
                try:
                    self.entries[parts[0]] = (parts[1], int(parts[2]), int(parts[3]), int(parts[4]), int(parts[5]))
                except ValueError:
                    continue

    def lookup(self, rel: str, st: os.stat_result, listed_md5: str | None) -> tuple[str, tuple[int, int]] | None:
        """(md5, (width, height)) if `rel` is unchanged since it passed its check, else None."""
        hit = self.entries.get(rel)
        if hit is None or hit[1] != st.st_size or hit[2] != st.st_mtime_ns:
            return None
        if listed_md5 is not None and listed_md5 != hit[0]:
            return None
        return hit[0], (hit[3], hit[4])

    def record(self, rel: str, md5: str, size: int, mtime_ns: int, dims: tuple[int, int]) -> None:
        self.entries[rel] = (md5, size, mtime_ns, dims[0], dims[1])

    def save(self, keep: set[str]) -> None:
        """Write the entries of the files in `keep` (those still in the dataset)."""
        if self.path is None:
            return
        lines = (f"{rel}\t{e[0]}\t{e[1]}\t{e[2]}\t{e[3]}\t{e[4]}\n" for rel, e in sorted(self.entries.items())
                 if rel in keep and "\t" not in rel and "\n" not in rel)
        try:
            atomic_write_text(self.path, "".join(lines))
        except OSError as e:  # a read-only checkout still snapshots, only without the speed-up
            print(f"warning: {self.path}: cannot save the snapshot check cache ({e.strerror or e})", file=sys.stderr)
