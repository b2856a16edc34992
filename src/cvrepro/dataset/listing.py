"""What DVC already knows about data/raw: the per-file md5s it recorded at `dvc add`, read
from its cache so snapshot does not hash every image a second time."""

from __future__ import annotations

import configparser
import json
import os
from pathlib import Path

import yaml

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
