"""Editing conf/ for the user: write a dataset option (conf/dataset/<name>.yaml) and select it, with its
task, in conf/config.yaml's defaults list, then recompose params.yaml. `cvrepro import` describes the
dataset it imported this way (formats/transfer.py writes the option's content)."""

from __future__ import annotations

import re
from pathlib import Path

from cvrepro.core.fileio import CvreproError, atomic_write_text

CONF_DATASET = Path("conf/dataset")
CONF_CONFIG = Path("conf/config.yaml")
GENERATED = "# Written by `cvrepro import`"  # an option file with this first line may be rewritten by the next import
CONF_FINGERPRINT = Path("conf/fingerprint")  # conf/fingerprint/<dataset>.yaml: defaults chosen from the data
FINGERPRINT_GENERATED = "# @package _global_\n# Written by `cvrepro fingerprint"  # (tasks/defaults.py writes it)


def option_name(text: str) -> str:
    """A Hydra option name from a folder name: letters, digits, _ and -."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_-").lower()
    return slug or "imported"


def dataset_option(root: Path, name: str) -> Path:
    return Path(root) / CONF_DATASET / f"{name}.yaml"


def check_replaceable(root: Path, name: str) -> None:
    """Refuse an option file `cvrepro import` did not write: it is the user's."""
    option = dataset_option(root, name)
    if option.exists() and not option.read_text().startswith(GENERATED):
        raise CvreproError(f"{option}: exists and was not written by `cvrepro import`; choose another --name")
    defaults = Path(root) / CONF_FINGERPRINT / f"{name}.yaml"  # checked now: written after the data is in place
    if defaults.exists() and not defaults.read_text().startswith(FINGERPRINT_GENERATED):
        raise CvreproError(f"{defaults}: exists and was not written by `cvrepro fingerprint`; edit or remove it, "
                           "or choose another --name")


def set_default(text: str, group: str, option: str) -> str:
    """config.yaml's text with `- group: option` in its defaults list."""
    pattern = re.compile(rf"^(\s*-\s*{group}\s*:\s*)([^\s#]+)", re.MULTILINE)
    if not pattern.search(text):
        raise CvreproError(f"{CONF_CONFIG}: no `- {group}: ...` line in the defaults list to select {option!r}")
    return pattern.sub(lambda m: m.group(1) + option, text, count=1)


def select_dataset(root: Path, name: str, task: str, option_text: str) -> dict:
    """Write conf/dataset/<name>.yaml (option_text, which starts with GENERATED), select it and its task in
    conf/config.yaml, recompose params.yaml."""
    from cvrepro.config.compose import write_params

    check_replaceable(root, name)
    config = root / CONF_CONFIG
    text = set_default(set_default(config.read_text(), "dataset", name), "task", task)
    atomic_write_text(dataset_option(root, name), option_text)
    atomic_write_text(config, text)
    write_params(root, force=True, log=lambda line: None)
    return {"dataset_option": str(CONF_DATASET / f"{name}.yaml"), "task": task}
