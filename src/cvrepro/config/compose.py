"""Compose `conf/` with Hydra into `params.yaml`, the file every stage reads.

DVC composes `conf/` only inside `dvc exp run -S ...`; plain `dvc repro` does not.
The `compose` stage in dvc.yaml closes that gap: it depends on `conf/` and writes
`params.yaml` (a persistent, uncached output, so DVC neither deletes it before the
stage runs nor caches it away from git).

The catch is that a stage writing params.yaml would undo `dvc exp run -S a.b=c`,
which DVC applies to params.yaml *before* the pipeline runs. So the rule is:
params.yaml is rewritten only while it still holds a composition: it carries the
stamp compose writes (`# composition md5 <md5 of the YAML below it>`) and the YAML
still hashes to it, or it is the committed file byte for byte. Anything else wrote
it (DVC's `-S`, which rewrites the file without its comments, `dvc exp apply`, a
hand edit): an explicit override, kept, and the differing keys are printed, never
silently reverted. The stamp travels with the file, so this holds under
`dvc exp run -f` and `dvc repro -f` too, where dvc.lock already records the
overridden file (the last run kept it) and so cannot tell an override from a
composition.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Iterable

import yaml

from cvrepro.core.fileio import CvreproError, atomic_write_text
from cvrepro.core.paths import CONF_DIR, DVC_LOCK, PARAMS

MISSING = object()  # a key present on one side only

HEADER = (
    "# Composed by `cvrepro compose` from conf/ (Hydra). Do not edit: change conf/,\n"
    "# or override for one experiment with `dvc exp run -S key=value`.\n"
)


def compose(conf_dir: Path = CONF_DIR, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """The resolved composition of conf/config.yaml with Hydra override strings, checked against the schema
    (config/schema.py): a bad key or value is a CvreproError naming it, before any stage reads it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides)
    source = f"{CONF_DIR}/" + (f" with {' '.join(overrides)}" if overrides else "")
    try:
        with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=overrides)
        params = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as e:
        raise CvreproError(f"{source}: {_one_line(e)}") from None
    validate_params(params, source)
    return params


def validate_params(params: Any, source: str) -> None:
    """Raise one line, `source: key must be ..., got value`, on the first problem the schema finds."""
    from cvrepro.config.schema import validate

    problems = validate(params)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CvreproError(f"{source}: {problems[0]}{more}")


def _one_line(error: Exception) -> str:
    """Hydra's message on one line; an override of a key no group has names what the group takes."""
    import re

    from cvrepro.config.schema import unknown_key

    text = str(error)
    found = re.search(r"Could not override '([^']+)'", text)
    named = unknown_key(found.group(1)) if found else None
    text = text.split("Config search path")[0]  # Hydra's search path: noise to a user
    return named or " ".join(line.strip() for line in text.splitlines() if line.strip())


class _Dumper(yaml.SafeDumper):
    """Block-style mappings, one key a line (readable diffs); short scalar lists inline."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(x, (dict, list)) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


STAMP = "# composition md5 "  # + md5 of the YAML that follows: what compose itself wrote


def dump(params: dict[str, Any]) -> str:
    body = yaml.dump(params, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)
    return HEADER + STAMP + hashlib.md5(body.encode()).hexdigest() + "\n" + body


def is_composition(text: str) -> bool:
    """Whether `text` is params.yaml as compose wrote it: its stamp matches the YAML after it."""
    at = text.find(STAMP)
    if at < 0 or (at > 0 and text[at - 1] != "\n"):
        return False
    end = text.find("\n", at)
    if end < 0:
        return False
    stamp = text[at + len(STAMP):end].strip()
    return hashlib.md5(text[end + 1:].encode()).hexdigest() == stamp


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def changed_keys(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every key whose value differs."""
    a, b = flatten(old), flatten(new)
    keys = sorted(set(a) | set(b))
    return [(k, a.get(k, MISSING), b.get(k, MISSING)) for k in keys if a.get(k, MISSING) != b.get(k, MISSING)]


def _holds_a_composition(root: Path, path: Path) -> bool:
    """params.yaml is compose's own output (its stamp matches), or the committed file byte for byte."""
    data = path.read_bytes()
    try:
        if is_composition(data.decode("utf-8")):
            return True
    except UnicodeDecodeError:
        return False
    from cvrepro.core.vcs import git_bytes

    return git_bytes(root, "HEAD", PARAMS.as_posix()) == data


def _fmt(v: Any) -> str:
    return "<absent>" if v is MISSING else repr(v)


def write_params(
    root: Path = Path("."), overrides: Iterable[str] = (), force: bool = False, log=print
) -> bool:
    """Compose conf/ into params.yaml unless params.yaml holds an explicit override.

    Returns True when params.yaml now equals the composition.
    """
    overrides = list(overrides)
    composed = compose(root / CONF_DIR, overrides)
    path = root / PARAMS
    current = yaml.safe_load(path.read_text()) if path.exists() else None
    if current == composed:
        if path.read_text() != dump(composed):  # same values written by another hand: stamp it as ours
            atomic_write_text(path, dump(composed))
        log(f"{PARAMS} is up to date with {CONF_DIR}/")
        return True
    if current is not None and not force and not overrides:
        if not _holds_a_composition(root, path):
            validate_params(current, str(PARAMS))  # an override (`dvc exp run -S`) is checked like conf/
            log(f"{PARAMS} was written since the last composition (dvc exp run -S, exp apply or an edit);")
            log(f"keeping it as an explicit override. It differs from {CONF_DIR}/ in:")
            for k, old, new in changed_keys(composed, current):
                log(f"  {k}: {_fmt(old)} in conf/ -> {_fmt(new)} kept")
            log("Run `cvrepro compose --force` to reset it to the composition of conf/.")
            return False
    if current is not None:
        for k, old, new in changed_keys(current, composed):
            log(f"  {k}: {_fmt(old)} -> {_fmt(new)}")
    atomic_write_text(path, dump(composed))
    log(f"wrote {PARAMS} from {CONF_DIR}/" + (f" with overrides {overrides}" if overrides else ""))
    return True


def check(root: Path = Path(".")) -> list[tuple[str, Any, Any]]:
    """Keys where params.yaml differs from the composition of conf/ (empty when equal)."""
    path = root / PARAMS
    current = yaml.safe_load(path.read_text()) if path.exists() else {}
    composed = compose(root / CONF_DIR)
    if path.exists():
        validate_params(current, str(PARAMS))
    return changed_keys(current, composed)


EXP_BASELINE_ENV = "DVC_EXP_BASELINE_REV"  # DVC sets it in the environment of the stages of `dvc exp run`


def undo_failed_experiment(root: Path = Path("."), log=print) -> bool:
    """A stage of `dvc exp run` failed: put params.yaml back to the composition of conf/ (the failed run's
    `-S` values are not kept as overrides) and dvc.lock back to the experiment's baseline commit (removed if
    that commit had none), so the next command starts where the user was, without a page of "kept" keys and
    preflight warnings. The outputs of the stages that did finish stay in the workspace; DVC compares them
    with dvc.lock by hash, so the next `dvc repro` reruns (or `dvc checkout` restores) exactly those.

    Does nothing outside `dvc exp run`: plain `dvc repro` never changes params.yaml, and the dvc.lock it
    leaves holds the stages that finished, truthfully. Returns whether it undid anything."""
    from cvrepro.core.fileio import atomic_write_bytes
    from cvrepro.core.vcs import git_bytes

    rev = os.environ.get(EXP_BASELINE_ENV, "")
    if not rev:
        return False
    try:
        atomic_write_text(root / PARAMS, dump(compose(root / CONF_DIR)))
        undone = f"{PARAMS} is the composition of {CONF_DIR}/ again"
    except Exception as e:  # conf/ does not compose (the failure itself may be that): leave params.yaml
        undone = f"{PARAMS} left as it is ({CONF_DIR}/ does not compose: {e})"
    lock = git_bytes(root, rev, DVC_LOCK.as_posix())
    if lock is None:
        (root / DVC_LOCK).unlink(missing_ok=True)
    else:
        atomic_write_bytes(root / DVC_LOCK, lock)
    log(f"the experiment failed: {undone}; {DVC_LOCK} is as at {rev[:10]}")
    return True
