"""The one registry of formats: each plug-in is a package `cvrepro.formats.<name>` that satisfies
`formats.plugin.FormatPlugin`: NAME, TASK (the task its labels are), WRITES_SPLITS (which splits its
layout holds: `formats.splits` NAMED, STANDARD or None), LOOKS_FOR (what its `detect` looks for, in
words), `detect(src) -> str | None` (the layout found, described, or None), `read(src) -> Dataset` and
`write(dataset, dest, splits=..., location=...)`. A new format is one folder here and one line in PLUGINS.

`choose(src)` is how `cvrepro import SRC` picks a format (Datumaro's way): every plug-in's
detect is asked and exactly one must say yes."""

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


def layouts(src: Path) -> dict[str, str]:
    """format -> the layout of it SRC has (described), in PLUGINS order."""
    found = {name: plugin(name).detect(Path(src)) for name in PLUGINS}
    return {name: (layout if isinstance(layout, str) else name) for name, layout in found.items() if layout}


def detect(src: Path) -> list[str]:
    """The formats whose layout SRC has, in PLUGINS order."""
    return list(layouts(src))


def choose(src: Path) -> tuple[str, str]:
    """(format, layout described) of SRC; one line naming what was looked for when none or several match."""
    src = Path(src)
    if not src.is_dir():
        raise CvreproError(f"{src}: not a folder; name the format (`cvrepro import FORMAT SRC`)")
    found = layouts(src)
    if len(found) == 1:
        return next(iter(found.items()))
    if found:
        said = "; ".join(f"{name} ({layout})" for name, layout in found.items())
        raise CvreproError(f"{src}: ambiguous layout, it matches {said}; name the format: "
                           f"cvrepro import {'|'.join(found)} {src}")
    looked = "; ".join(f"{name}: {plugin(name).LOOKS_FOR}" for name in PLUGINS)
    raise CvreproError(f"{src}: no known dataset layout (looked for {looked}); name the format: "
                       f"cvrepro import FORMAT SRC{_inside(src)}")


def _inside(src: Path) -> str:
    """A hint when SRC is the folder above a dataset: '; but raccoon/ is voc (...)' (empty if none)."""
    for sub in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = layouts(sub)
        if len(found) == 1:
            name, layout = next(iter(found.items()))
            return f"; {sub.name}/ inside it is {name} ({layout})"
    return ""


def formats_of_task(task: str) -> list[str]:
    """The formats that hold labels of `task`."""
    return [name for name in PLUGINS if plugin(name).TASK == task]
