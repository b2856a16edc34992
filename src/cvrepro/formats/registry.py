"""The one registry of formats: each plug-in is a package `cvrepro.formats.<name>` with
NAME, TASK (the task its labels are), WRITES_SPLITS (which splits its layout holds: `formats.splits`
NAMED, STANDARD or None), `detect(src) -> bool`, `read(src) -> Dataset` and
`write(dataset, dest, splits=..., location=...)`. A new format is one folder here and one line in PLUGINS."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from cvrepro.core.fileio import CvreproError

PLUGINS = ("coco", "yolo", "voc", "masks", "imagefolder")  # the order `detect` tries them


def format_names() -> list[str]:
    return list(PLUGINS)


def plugin(name: str) -> ModuleType:
    if name not in PLUGINS:
        raise CvreproError(f"format {name!r} is unknown; choose one of {', '.join(PLUGINS)}")
    return importlib.import_module(f"cvrepro.formats.{name}")


def detect(src: Path) -> list[str]:
    """The formats whose layout SRC has, in PLUGINS order."""
    return [name for name in PLUGINS if plugin(name).detect(Path(src))]


def formats_of_task(task: str) -> list[str]:
    """The formats that hold labels of `task`."""
    return [name for name in PLUGINS if plugin(name).TASK == task]
