"""`cvrepro reproduce vX.Y.Z`: prove that a model release can be rebuilt from git and
the DVC remote alone, and that the rebuild gives the released model.

In a temporary git worktree at the tag, with an empty DVC cache of its own (so
nothing comes from this machine's cache), it pulls every tracked file from the
remote, checks the pulled release artifacts against the release record's sha256,
reruns the whole pipeline from scratch (`dvc repro -f`) and compares the result
with the record: snapshot ID, processed-data hash, label map, and then one of two ways:

- bit-exact, when the rebuild ran on the record's hardware class (learning/devices.py:
  CPU architecture and pinned kernel level, or GPU model and CUDA/cuDNN; precision;
  world size) in deterministic mode, or the record predates hardware records: the
  weights bit for bit and every metric within `evaluate.reproduce_tolerance`
  (absolute, from the params at the tag; 0.005 when the tag predates the setting);
- metric-tolerance, otherwise: other hardware sums in another order, so the weights
  differ by design and are not compared; every metric must lie within
  `evaluate.reproduce_tolerance_other_hardware` (per metric name, or `default`),
  measured from the spread of the metrics over training seeds (benchmarks/seed_spread.py).

The verdict says which it did and why. Timing metrics (`latency_ms`) measure the
machine, not the model, and are skipped.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import yaml

from cvrepro.config.params import OTHER_HARDWARE_TOLERANCE, REPRODUCE_TOLERANCE, recorded
from cvrepro.core.fileio import CvreproError, read_json, sha256_file
from cvrepro.provenance.lineage import dvc_hash, sha256_dir
from cvrepro.core.paths import (LABEL_MAP, MANIFEST, METRICS, PARAMS, PREPROCESSING, PROCESSED_DIR, TRAIN_INFO,
                                WEIGHTS)
from cvrepro.provenance.registry import record_at
from cvrepro.core.vcs import dvc, git, git_bytes, parse_version

# A tag from before a setting existed is judged as a tag with the template's value would be (config/params.py).
DEFAULT_TOLERANCE = REPRODUCE_TOLERANCE
DEFAULT_OTHER_HARDWARE = OTHER_HARDWARE_TOLERANCE
TIMING_METRICS = {"latency_ms"}  # wall-clock figures: machine-dependent, never compared


def _params_at(root: Path, tag: str) -> dict | None:
    """params.yaml as committed at `tag`: another revision's, so read with `recorded`, never typed (it need not
    fit today's schema)."""
    data = git_bytes(root, tag, PARAMS.as_posix())
    return yaml.safe_load(data) if data else None


def tolerance_at(root: Path, tag: str) -> float:
    """`evaluate.reproduce_tolerance` of params.yaml at `tag`, else DEFAULT_TOLERANCE."""
    value = recorded(_params_at(root, tag), "evaluate.reproduce_tolerance", DEFAULT_TOLERANCE)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise CvreproError(f"{PARAMS} at {tag}: evaluate.reproduce_tolerance must be a number >= 0, got {value!r}")
    return float(value)


def other_hardware_tolerance_at(root: Path, tag: str) -> dict[str, float]:
    """`evaluate.reproduce_tolerance_other_hardware` at `tag`: {metric name or "default": tolerance}."""
    value = recorded(_params_at(root, tag), "evaluate.reproduce_tolerance_other_hardware", DEFAULT_OTHER_HARDWARE)
    if not isinstance(value, dict) or "default" not in value or not all(
            _number(v) and v >= 0 for v in value.values()):
        raise CvreproError(f"{PARAMS} at {tag}: evaluate.reproduce_tolerance_other_hardware must map metric names "
                           f"and 'default' to numbers >= 0, got {value!r}")
    return {str(k): float(v) for k, v in value.items()}


def _metric_tolerance(name: str, tolerances: dict[str, float]) -> float:
    """The tolerance of `val.per_class.cart.AP`: the longest matching suffix (`AP`, `per_class.cart.AP`, ...)."""
    parts = name.split(".")
    for i in range(len(parts)):
        if ".".join(parts[i:]) in tolerances:
            return tolerances[".".join(parts[i:])]
    return tolerances["default"]


def same_hardware(recorded: dict | None, rebuilt: dict | None) -> tuple[bool, str]:
    """Whether the rebuild may be compared bit for bit with the record, and why (or why not)."""
    if not recorded:
        return True, "the record predates hardware records: compared bit for bit, as it was made"
    if not rebuilt:
        return False, "the rebuild wrote no hardware record"
    if recorded.get("class") != rebuilt.get("class"):
        return False, f"hardware class differs: recorded {recorded.get('class')}, rebuilt {rebuilt.get('class')}"
    models = recorded.get("device_name"), rebuilt.get("device_name")
    if recorded.get("device_type") == "cpu" and None not in models and models[0] != models[1]:
        # one pinned kernel level, other CPU models: measured to give other bits (an AMD EPYC and an Intel Xeon
        # at avx2 trained the demo to different weights), so only the metrics can be compared
        return False, f"CPU model differs: recorded {models[0]}, rebuilt {models[1]} (bits may differ between " \
                      "CPU models at one kernel level)"
    if not (recorded.get("deterministic") and rebuilt.get("deterministic")):
        return False, "not deterministic (train.deterministic false): bits are not expected to repeat"
    return True, f"same hardware class {recorded.get('class')}, deterministic"


def flat_metrics(metrics: dict, prefix: str = "") -> dict[str, object]:
    """{"val.AP50": 0.41, "val.per_class.cart.AP": ...}: every leaf but the timing metrics."""
    out: dict[str, object] = {}
    for key, value in metrics.items():
        if key in TIMING_METRICS:
            continue
        if isinstance(value, dict):
            out.update(flat_metrics(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def compare_metrics(expected: dict, got: dict, tolerance: float | dict[str, float]) -> list[dict]:
    """One check per metric: numbers within `tolerance` (absolute; a dict gives it per metric name,
    see `_metric_tolerance`), anything else equal."""
    want, have = flat_metrics(expected), flat_metrics(got)
    checks = []
    for name in sorted(set(want) | set(have)):
        a, b = want.get(name, "(missing)"), have.get(name, "(missing)")
        tol = _metric_tolerance(name, tolerance) if isinstance(tolerance, dict) else tolerance
        ok = abs(a - b) <= tol if _number(a) and _number(b) else a == b
        checks.append(_check(f"metric {name}", a, b, ok))
    return checks


def _check(name: str, expected: object, got: object, ok: bool | None = None) -> dict:
    return {"check": name, "expected": expected, "got": got, "ok": expected == got if ok is None else bool(ok)}


def _sha(wt: Path, rel, expected=None) -> str:
    """The hash of `wt/rel` in the form `expected` has: DVC's ``md5:`` of a stage output, else sha256."""
    path = wt / rel
    if path.is_dir():
        if isinstance(expected, str) and expected.startswith("md5:"):
            return dvc_hash(wt, str(rel)) or "(not a DVC stage output)"
        return sha256_dir(path)
    return sha256_file(path) if path.is_file() else "(missing)"


def _uncached_outs(wt: Path) -> set[str]:
    """Stage outputs the tag's dvc.yaml keeps out of the cache (`cache: false`, such as data/processed): the
    remote has no copy of them to pull; the rebuild makes them and `_rebuilt_checks` compares them."""
    stages = (yaml.safe_load((wt / "dvc.yaml").read_text()) or {}).get("stages") or {}
    return {path for stage in stages.values() for out in stage.get("outs") or [] if isinstance(out, dict)
            for path, opts in out.items() if isinstance(opts, dict) and opts.get("cache") is False}


def _pulled_checks(wt: Path, record: dict) -> list[dict]:
    """The release's own files as the remote gave them, against the record's sha256."""
    recorded = {**(record.get("lineage", {}).get("artifacts") or {}), **record.get("artifacts", {})}
    uncached = _uncached_outs(wt)
    return [_check(f"pulled {path}", sha, _sha(wt, path, sha)) for path, sha in sorted(recorded.items())
            if path not in uncached]


def _rebuilt_checks(wt: Path, record: dict, tolerance: float, other: dict[str, float], verdict: dict) -> list[dict]:
    lineage = record.get("lineage", {}).get("artifacts") or {}
    manifest = read_json(wt / MANIFEST) if (wt / MANIFEST).is_file() else {}
    rebuilt = (read_json(wt / TRAIN_INFO) if (wt / TRAIN_INFO).is_file() else {}).get("hardware")
    exact, why = same_hardware(record.get("lineage", {}).get("hardware"), rebuilt)
    verdict.update(mode="bit-exact" if exact else "metric-tolerance", mode_reason=why,
                   tolerance=tolerance if exact else other)
    weights = _check(f"{WEIGHTS} sha256", record["artifacts"].get(str(WEIGHTS)), _sha(wt, WEIGHTS))
    if not exact:  # other arithmetic: different bits are expected; the metrics decide
        weights = _check(f"{WEIGHTS} sha256 (not compared: other hardware)", weights["expected"], weights["got"], True)
    checks = [
        _check("snapshot_id", record.get("snapshot_id"), manifest.get("snapshot_id", "(missing)")),
        _check(f"{PROCESSED_DIR} hash", lineage.get(str(PROCESSED_DIR)),
               _sha(wt, PROCESSED_DIR, lineage.get(str(PROCESSED_DIR)))),
        weights,
        _check(f"{LABEL_MAP} sha256", record["artifacts"].get(str(LABEL_MAP)), _sha(wt, LABEL_MAP)),
        _check(f"{PREPROCESSING} sha256", record["artifacts"].get(str(PREPROCESSING)), _sha(wt, PREPROCESSING)),
    ]
    got = read_json(wt / METRICS) if (wt / METRICS).is_file() else {}
    if checks[1]["expected"] is None:  # records made before lineage hashes were kept: nothing to compare with
        del checks[1]
    return checks + compare_metrics(record.get("metrics", {}), got, tolerance if exact else other)


def _tail(res) -> str:
    return "\n".join((res.stderr or res.stdout or "").strip().splitlines()[-5:])


def reproduce(root: Path, version: str, remote: str | None = None, keep: bool = False,
              progress: Callable[[str], None] = lambda msg: None) -> dict:
    """Rebuild release `version` from the remote in a fresh worktree; the verdict as a dict.

    Bad input (not a model release) raises CvreproError; a failed step or a
    mismatch is a failed check in the verdict (`ok` False, `failed` names them).
    """
    root = Path(root).resolve()
    parse_version(version, "v")
    record = record_at(root, version)
    tolerance = tolerance_at(root, version)
    other = other_hardware_tolerance_at(root, version)
    tmp = Path(tempfile.mkdtemp(prefix=f"cvrepro-reproduce-{version}-"))
    wt = tmp / "worktree"
    verdict = {"version": version, "tolerance": tolerance, "mode": None, "mode_reason": None,
               "skipped": sorted(TIMING_METRICS),
               "worktree": str(wt) if keep else None, "checks": []}
    checks = verdict["checks"]
    try:
        git(root, "worktree", "add", "--detach", str(wt), version)
        if (root / ".dvc/config.local").is_file():  # untracked: the local remote settings live here
            shutil.copy2(root / ".dvc/config.local", wt / ".dvc/config.local")
        # An empty cache inside the worktree, whatever config.local says: only the remote may supply data.
        dvc(wt, "cache", "dir", "--local", str(wt / ".dvc" / "cache"))

        progress(f"pull: dvc pull{' -r ' + remote if remote else ''} into an empty cache")
        res = dvc(wt, "pull", *(["-r", remote] if remote else []), check=False)
        checks.append(_check("dvc pull", "ok", "ok" if res.returncode == 0 else f"failed: {_tail(res)}"))
        checks += _pulled_checks(wt, record)  # also after a failed pull: names each file that did not arrive intact
        if all(c["ok"] for c in checks):
            progress("repro: dvc repro -f (the whole pipeline, from scratch)")
            # The stages run the tag's own code (src/ at the tag), not whatever is installed now.
            res = dvc(wt, "repro", "-f", check=False, env={"PYTHONPATH": str(wt / "src")})
            checks.append(_check("dvc repro -f", "ok", "ok" if res.returncode == 0 else f"failed: {_tail(res)}"))
            if res.returncode == 0:
                progress("compare: rebuilt outputs against the release record")
                checks += _rebuilt_checks(wt, record, tolerance, other, verdict)
    finally:
        if not keep:
            git(root, "worktree", "remove", "--force", str(wt), check=False)
            git(root, "worktree", "prune", check=False)
            shutil.rmtree(tmp, ignore_errors=True)
    verdict["failed"] = [c["check"] for c in checks if not c["ok"]]
    verdict["ok"] = not verdict["failed"]
    return verdict


def _short(value: object) -> str:
    """Hashes cut to 16 hex digits for the table (the JSON verdict has them whole)."""
    text = value if isinstance(value, str) else json.dumps(value)
    m = re.fullmatch(r"(sha256:)?([0-9a-f]{64})", text)
    return f"{m.group(1) or ''}{m.group(2)[:16]}" if m else text


def format_verdict(verdict: dict) -> str:
    rows = [("check", "expected", "got", "result")] + [
        (c["check"], _short(c["expected"]), _short(c["got"]), "pass" if c["ok"] else "FAIL")
        for c in verdict["checks"]]
    widths = [max(len(r[i].splitlines()[0]) if r[i] else 0 for r in rows) for i in range(3)]
    lines = ["  ".join(r[i].splitlines()[0].ljust(widths[i]) if r[i] else "".ljust(widths[i])
                       for i in range(3)) + "  " + r[3] for r in rows]
    if verdict.get("mode"):
        lines.append(f"compared {verdict['mode']}: {verdict['mode_reason']}")
    lines += [f"metrics compared with absolute tolerance {verdict['tolerance']}; skipped (timing): "
              + ", ".join(verdict["skipped"])]
    if verdict["ok"]:
        lines.append(f"{verdict['version']} reproduced: every check passed")
    else:
        lines.append(f"{verdict['version']} NOT reproduced; failed: {', '.join(verdict['failed'])}")
        lines += [f"  {c['check']}: {c['got']}" for c in verdict["checks"] if not c["ok"] and "\n" in str(c["got"])]
    if verdict["worktree"]:
        lines.append(f"worktree kept at {verdict['worktree']} (remove: git worktree remove --force {verdict['worktree']})")
    return "\n".join(lines)
