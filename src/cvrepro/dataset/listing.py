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

from cvrepro.core.fileio import atomic_write_chunks
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
    """Results of earlier checks of images that passed: relpath, md5, size, mtime_ns, width, height.

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
        # relpath -> the rest of its line, "md5<TAB>size<TAB>mtime_ns<TAB>width<TAB>height": parsed only when
        # looked up, and written back as read (at 100k images, parsing every line up front cost more than the rest)
        self.entries: dict[str, str] = {}
        if self.path is None:
            return
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return
        for line in text.splitlines():
            rel, _, rest = line.partition("\t")
            if rest.count("\t") == 4 and rest.index("\t") == 32:
                self.entries[rel] = rest

    def lookup(self, rel: str, st: os.stat_result, listed_md5: str | None, dims: tuple[int, int]) -> str | None:
        """The md5 of `rel` if it is unchanged since it passed its check with these (width, height), else None."""
        rest = self.entries.get(rel)
        if rest is None or rest[33:] != f"{st.st_size}\t{st.st_mtime_ns}\t{dims[0]}\t{dims[1]}":
            return None
        md5 = rest[:32]
        return md5 if listed_md5 is None or listed_md5 == md5 else None

    def record(self, rel: str, md5: str, size: int, mtime_ns: int, dims: tuple[int, int]) -> None:
        self.entries[rel] = f"{md5}\t{size}\t{mtime_ns}\t{dims[0]}\t{dims[1]}"

    def save(self, keep: list[str]) -> None:
        """Write the entries of the files in `keep` (those still in the dataset), in that order."""
        if self.path is None:
            return
        entries = self.entries
        keep = [rel for rel in keep if rel in entries and "\t" not in rel and "\n" not in rel]
        chunks = ("".join(f"{rel}\t{entries[rel]}\n" for rel in keep[i:i + 1000]).encode("utf-8")
                  for i in range(0, len(keep), 1000))
        try:
            atomic_write_chunks(self.path, chunks)
        except OSError as e:  # a read-only checkout still snapshots, only without the speed-up
            print(f"warning: {self.path}: cannot save the snapshot check cache ({e.strerror or e})", file=sys.stderr)
