"""The interface of a format plug-in, as a typing.Protocol: what `cvrepro import`/`export` may ask of a
format (formats/transfer.py), the way tasks/base.py's `Task` is what the stages may ask of a task.

A plug-in is a module, `cvrepro.formats.<name>` (its package's __init__.py), listed in
registry.PLUGINS; a module satisfies `FormatPlugin` structurally, with module-level names, and
`problems(module)` names what one lacks (tests/test_formats.py checks every registered plug-in).
Importers take the options they use and ignore the rest (`**_options`): transfer passes every
import option to every format."""

from __future__ import annotations

import inspect
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from cvrepro.formats.common import Dataset
from cvrepro.formats.splits import NAMED, STANDARD, Assignment

# the keywords transfer passes: to every read, and to every write besides the plug-in's own options
READ_OPTIONS = ("annotations", "ignore_index", "check", "voc_coords", "files")
WRITE_OPTIONS = ("splits", "location")


@runtime_checkable
class FormatPlugin(Protocol):
    NAME: str  # its name in registry.PLUGINS and on the command line
    TASK: str  # the task its labels are (a name in cvrepro.tasks)
    WRITES_SPLITS: str | None  # which splits its layout holds: splits.NAMED, splits.STANDARD or None
    LOOKS_FOR: str  # what `detect` looks for, in words (said when no layout matches)

    def detect(self, src: Path) -> str | None:
        """The layout of this format SRC has, described, or None (registry.choose asks every plug-in)."""

    def read(self, src: Path, **options: Any) -> Dataset:
        """SRC as a Dataset; bad input is one CvreproError naming the file and field."""

    def write(self, dataset: Dataset, dest: Path, *, splits: Assignment | None = None,
              location: Path | None = None, **options: Any) -> None:
        """The dataset in this format's layout under DEST (an empty folder), with `splits`."""


def problems(module: ModuleType) -> list[str]:
    """What `module` lacks to be a FormatPlugin (empty: it is one), each in a few words."""
    out = [f"no {name}" for name in ("NAME", "TASK", "LOOKS_FOR") if not isinstance(getattr(module, name, None), str)]
    if getattr(module, "WRITES_SPLITS", "") not in (NAMED, STANDARD, None):
        out.append(f"WRITES_SPLITS is {getattr(module, 'WRITES_SPLITS', 'missing')!r}, not NAMED, STANDARD or None")
    calls = {"detect": ((Path("."),), {}), "read": ((Path("."),), dict.fromkeys(READ_OPTIONS)),
             "write": ((None, Path(".")), dict.fromkeys(WRITE_OPTIONS))}
    for name, (args, kwargs) in calls.items():
        fn = getattr(module, name, None)
        if not callable(fn):
            out.append(f"no {name}()")
            continue
        try:
            inspect.signature(fn).bind(*args, **kwargs)
        except TypeError as e:
            out.append(f"{name}() does not take what transfer passes ({e})")
    return out
