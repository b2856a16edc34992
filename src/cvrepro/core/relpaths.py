"""Relative paths inside a project folder: normalising what an index file names, and
checking that a path stays inside its folder once symlinks are resolved."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def normalize_relpath(name: Any, backslash_is_separator: bool = False) -> str | None:
    """The posix relpath ('./a//b.png' → 'a/b.png'), or None if `name` is not a non-empty string, is absolute
    (also C:\\... or \\share) or climbs out with `..`. Plain string work, not pathlib: this runs once per image.

    backslash_is_separator: read 'a\\b.png' as 'a/b.png' (files written on Windows); otherwise a backslash
    stays part of the name, as it is on POSIX, but still counts as a separator for the `..` check."""
    if not isinstance(name, str) or not name:
        return None
    drive = len(name) > 1 and name[1] == ":" and name[0].isalpha()
    if name[0] in "/\\" or drive or ".." in name.replace("\\", "/").split("/"):
        return None
    if backslash_is_separator:
        name = name.replace("\\", "/")
    rel = "/".join(part for part in name.split("/") if part not in ("", "."))
    return name if rel == name else rel or None  # the caller's string when unchanged: one copy per image, not two


class Containment:
    """Does a path under `folder` stay inside it once symlinks are resolved?

    Resolving every path costs one lstat per path component; datasets keep many
    images per folder, so resolve each folder once and lstat only the file.
    """

    def __init__(self, folder: Path):
        self.folder = os.fspath(folder)  # a str: os.path on a Path converts it on every call
        self.prefix = os.path.realpath(folder) + os.sep
        self.folders: dict[str, bool] = {}  # relative parent folder -> resolves inside

    def inside(self, rel: str, is_link: bool | None = None) -> bool:
        """rel: a normalised posix relpath (`normalize_relpath`). is_link: whether the file itself is a symlink,
        when the caller already lstat'ed it. A file that is not a link is inside when its folder is."""
        if is_link is None:
            is_link = os.path.islink(os.path.join(self.folder, rel))
        if is_link:
            return os.path.realpath(os.path.join(self.folder, rel)).startswith(self.prefix)
        parent = rel.rpartition("/")[0]
        ok = self.folders.get(parent)
        if ok is None:
            ok = self.folders[parent] = (os.path.realpath(os.path.join(self.folder, parent)) + os.sep).startswith(
                self.prefix)
        return ok
