"""`cvrepro release dataset|model`: a semantic version as an annotated git tag, a
git-tracked release record with human notes, and the bytes pushed to the DVC remote.

Order of work, so that a refusal or a failure changes nothing: check everything
(clean tree, pipeline up to date, version free and large enough), push the data
(idempotent), then write the record, commit it and tag. If committing or tagging
fails, the record commit is undone; tags are never moved or reused. The caller holds
the repository lock (core/lock.py), and each step is journaled (provenance/journal.py):
a release killed at any point is completed or rolled back by the next command.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from cvrepro import tasks
from cvrepro.dataset import diff as datadiff
from cvrepro.dataset.fingerprint import summary_lines as fingerprint_lines
from cvrepro.dataset.splits import SPLIT_NAMES, require_no_empty_split
from cvrepro.provenance import check, export, gtotags, journal, preflight, registry
from cvrepro.config.compose import MISSING, changed_keys
from cvrepro.core.faults import kill_point
from cvrepro.core.fileio import CvreproError, atomic_write_bytes, read_json, sha256_bytes, sha256_file
from cvrepro.config.params import config_id, run_params
from cvrepro.config.typed import load
from cvrepro.core.paths import (DVC_LOCK, LABEL_MAP, LINEAGE, MANIFEST, METRICS, PARAMS, PREPROCESSING, SPLITS,
                    WEIGHTS, CHECKPOINT)
from cvrepro.core.vcs import (BUMPS, dvc_changed, dvc_watched, bump, bump_level, dirty_paths, dvc, format_version, git, head_commit, parse_version,
                  tag_exists)

DATA_STAGES = ["compose", "snapshot", "split"]  # the .dvc-tracked inputs: preflight's "data pinned"
MODEL_ARTIFACTS = [WEIGHTS, LABEL_MAP, PREPROCESSING, CHECKPOINT]


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- checks


def require_clean_tree(root: Path) -> str:
    head = head_commit(root)
    dirty = dirty_paths(root)
    if dirty:
        shown = ", ".join(dirty[:10]) + (" ..." if len(dirty) > 10 else "")
        raise CvreproError(f"the git tree is dirty ({shown}): commit or stash first, so the release names "
                           "exactly the code, configs and dvc.lock it was made from")
    return head


def require_up_to_date(root: Path, targets: list[str] | None = None) -> None:
    status = dvc_changed(root, *(targets or []))
    if status:
        raise CvreproError(f"the pipeline is not up to date ({', '.join(sorted(status))} changed): run "
                           f"`dvc repro{' ' + targets[-1] if targets else ''}` and commit dvc.lock first")


def _require_remote(root: Path, remote: str | None) -> str:
    if remote:
        return remote
    res = dvc(root, "remote", "default", check=False)
    name = res.stdout.strip()
    if res.returncode != 0 or not name or " " in name:  # dvc prints "No default remote set" on stdout
        raise CvreproError("no default DVC remote: add one (`dvc remote add -d NAME URL`, see README 'Remotes') "
                           "or pass --remote NAME")
    return name


def choose_version(root: Path, prefix: str, newest: tuple | None, required: str | None, reason: str,
                   version: str | None, level: str | None, notes: str) -> tuple[str, str]:
    """The new version and its bump level, or a CvreproError saying why not."""
    if version and level:
        raise CvreproError("give either --version or --bump, not both")
    if version:
        existing = format_version(prefix, parse_version(version, prefix))
        if tag_exists(root, existing):
            raise CvreproError(f"{existing} already exists: released versions are never overwritten")
    if newest is None:
        base = (0, 0, 0)
        new = parse_version(version, prefix) if version else bump(base, level) if level else (0, 1, 0)
        chosen = "initial"
    else:
        base, newest_tag = newest
        if required is None:
            raise CvreproError(f"nothing changed since {newest_tag}: no release made")
        if version:
            new = parse_version(version, prefix)
            chosen = bump_level(base, new)
            if chosen is None:
                raise CvreproError(f"{format_version(prefix, new)} is not greater than the newest release {newest_tag}")
        else:
            chosen = level or required
            new = bump(base, chosen)
        if BUMPS.index(chosen) < BUMPS.index(required):
            raise CvreproError(f"a {chosen} bump is smaller than this change needs: {required} "
                               f"({reason}); use --bump {required}")
        if BUMPS.index(chosen) > BUMPS.index(required) and not notes.strip():
            raise CvreproError(f"a {chosen} bump is larger than this change needs ({required}: {reason}); "
                               "give the reason with --notes")
    tag = format_version(prefix, new)
    if tag_exists(root, tag) or (root / registry.record_path(tag)).exists():
        raise CvreproError(f"{tag} already exists: released versions are never overwritten")
    return tag, chosen


def _publish(root: Path, tag: str, record: dict, notes_md: str, message: str, remote: str, head: str,
             extra: list[Path] = ()) -> None:
    """Push the data, then write, commit and tag the record (with the `extra` files already written, e.g. the
    model bundle), each step noted in the journal (see `journal`) so that a kill at any point is finished or
    rolled back by the next command. If committing or tagging fails, the commit is undone, only while HEAD is
    still that commit."""
    rel = registry.record_path(tag)
    files = {rel.as_posix(): _json_bytes(record), rel.with_suffix(".md").as_posix(): notes_md.encode()}
    journal.begin(root, tag=tag, head=head, message=message,
                  files={p: sha256_bytes(b) for p, b in files.items()})
    kill_point("release:before-push")
    try:
        push(root, remote)
    except CvreproError:
        journal.clear(root)  # nothing written yet; what arrived in the remote is reused by the rerun
        raise
    kill_point("release:after-push")
    for path, data in files.items():
        atomic_write_bytes(root / path, data)
    kill_point("release:after-write")
    commit = None
    committed = [*files, *(Path(e).as_posix() for e in extra)]
    try:
        git(root, "add", "--", *committed)
        git(root, "commit", "-q", "-m", message, "--", *committed)
        commit = head_commit(root)
        journal.note(root, commit=commit)
        kill_point("release:after-commit")
        git(root, "tag", "-a", tag, "--cleanup=verbatim", "-F", "-", commit, input=notes_md)
        kill_point("release:after-tag")
    except CvreproError:
        tagged = git(root, "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{commit}}", check=False)
        if commit is not None and head_commit(root) == commit and tagged != commit:
            git(root, "reset", "-q", "--soft", head)  # our own, untagged commit, still HEAD: nothing else
        git(root, "reset", "-q", "--", *committed, check=False)
        journal.remove_files(root, files={p: sha256_bytes(b) for p, b in files.items()})
        journal.clear(root)
        raise
    # `NAME@vX.Y.Z` for DVC's model registry (dvc artifacts get, gto show). A kill before it: `recover` makes it.
    gtotags.tag_release(root, tag, commit)
    journal.clear(root)


def _json_bytes(obj) -> bytes:
    """The bytes write_json writes: the record's file is hashed before it is written."""
    return (json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


S3_TIMEOUTS = {"connect_timeout": "5", "read_timeout": "5"}  # seconds per request: a dead endpoint fails in ~35 s
PUSH_ATTEMPTS = "1"  # botocore's attempts per request (s3fs adds a few retries of its own, with back-off)


def _remote_facts(root: Path, remote: str) -> tuple[str, dict[str, str]]:
    """(url, {option: value}) of a DVC remote, from `dvc config` (all levels merged)."""
    res = dvc(root, "config", "--list", check=False)
    opts = {}
    for line in (res.stdout or "").splitlines():
        key, _, value = line.partition("=")
        if key.startswith(f"remote.{remote}."):
            opts[key[len(f"remote.{remote}."):]] = value
    return opts.get("url", "?"), opts


def push(root: Path, remote: str) -> None:
    """`dvc push` with bounded waits: an S3 remote without timeouts gets S3_TIMEOUTS in .dvc/config.local
    (`dvc remote modify --local`, said on stderr), and botocore makes PUSH_ATTEMPTS attempts per request
    (AWS_MAX_ATTEMPTS overrides), so a dead endpoint fails the push in about a minute, naming the remote
    and its URL. DVC's progress bars show on stderr. A rerun uploads only what is missing."""
    url, opts = _remote_facts(root, remote)
    where = f"remote '{remote}' ({url}" + (f" at {opts['endpointurl']}" if opts.get("endpointurl") else "") + ")"
    if url.startswith("s3://"):
        for key, value in S3_TIMEOUTS.items():
            if key not in opts:
                dvc(root, "remote", "modify", "--local", remote, key, value)
                print(f"note: {where} had no {key}: set {value} s in .dvc/config.local", file=sys.stderr)
    env = {"AWS_MAX_ATTEMPTS": os.environ.get("AWS_MAX_ATTEMPTS", PUSH_ATTEMPTS)}
    print(f"pushing the data to {where}", file=sys.stderr, flush=True)
    started = time.monotonic()
    after = "nothing was committed or tagged; rerun the release when the remote is back (what arrived is not " \
            "uploaded again)"
    dead_after = _dead_after()
    watch = _Watchdog(opts.get("endpointurl"), f"dvc push to {where} stopped: the endpoint has not answered for "
                      f"{dead_after:g} s; {after}", dead_after=dead_after)
    code = dvc_watched(root, "push", "-r", remote, env=env, stalled=watch)  # DVC's own progress bars
    if code != 0:
        raise CvreproError(f"dvc push to {where} failed after {time.monotonic() - started:.0f} s (DVC's message "
                           f"above): {after}")


DEAD_AFTER = 30.0  # seconds without an answer from the endpoint before a push is stopped
DEAD_AFTER_ENV = "CVREPRO_PUSH_DEAD_AFTER"  # overrides DEAD_AFTER (seconds; the tests' dying remote sets a few)


def _dead_after() -> float:
    value = os.environ.get(DEAD_AFTER_ENV, "")
    try:
        seconds = float(value) if value else DEAD_AFTER
    except ValueError:
        raise CvreproError(f"{DEAD_AFTER_ENV}={value!r} is not a number of seconds") from None
    if not seconds > 0:
        raise CvreproError(f"{DEAD_AFTER_ENV}={value!r} must be above 0 seconds")
    return seconds


class _Watchdog:
    """Probes an S3 endpoint every few seconds while DVC pushes: DVC retries each file on its own, so
    a dead endpoint would otherwise cost (files / jobs) x (timeouts x retries). Any HTTP answer, an
    error status included, counts as alive; `__call__` returns the message once it was dead `dead_after` s
    (probing every 5 s, or every dead_after / 4 s when that is shorter)."""

    def __init__(self, endpoint: str | None, message: str, dead_after: float = DEAD_AFTER):
        self.endpoint, self.message, self.dead_after = endpoint, message, dead_after
        self.every = min(5.0, dead_after / 4)
        self.last_alive = self.last_probe = time.monotonic()

    def _alive(self) -> bool:
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(self.endpoint, timeout=self.every).close()
            return True
        except urllib.error.HTTPError:
            return True
        except (OSError, ValueError):
            return False

    def __call__(self) -> str | None:
        now = time.monotonic()
        if not self.endpoint or now - self.last_probe < self.every:
            return None
        self.last_probe = now
        if self._alive():
            self.last_alive = time.monotonic()
            return None
        return self.message if time.monotonic() - self.last_alive >= self.dead_after else None


def _lock_hashes(root: Path) -> dict[str, str]:
    """{out path: md5} of every output in dvc.lock and of the .dvc-tracked inputs."""
    out: dict[str, str] = {}
    for dvcfile in ("data/raw.dvc", "data/labels.dvc"):
        if (root / dvcfile).exists():
            for o in (yaml.safe_load((root / dvcfile).read_text()) or {}).get("outs", []):
                out[(Path(dvcfile).parent / o["path"]).as_posix()] = o.get("md5")
    if (root / DVC_LOCK).exists():
        for stage in (yaml.safe_load((root / DVC_LOCK).read_text()) or {}).get("stages", {}).values():
            for o in stage.get("outs", []):
                out[o["path"]] = o.get("md5")
    return out


# --------------------------------------------------------------------------- datasets


def _md_table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def dataset_notes(record: dict) -> str:
    s, prev = record["stats"], record.get("previous")
    lines = [f"# {record['version']}", "",
             f"Dataset release ({record['task']}): {s['images']} images, {s['objects']} objects, "
             f"{len(record['class_map'])} classes.", "",
             f"- snapshot: `{record['snapshot_id']}`",
             f"- made from commit `{record['source_commit']}`",
             f"- bump: {record['bump']}" + (f" over {prev} ({record['changelog']['reason']})" if prev else ""),
             f"- split: seed {record['split'].get('seed')}, {record['split'].get('counts')}"]
    invalid = s.get("invalid_boxes")
    if invalid and (invalid.get("dropped") or invalid.get("clipped")):
        lines.append(f"- import `--invalid {invalid.get('mode')}`: {invalid.get('dropped', 0)} boxes dropped, "
                     f"{invalid.get('clipped', 0)} clipped (data/labels/import_report.csv lists each)")
    bad = s.get("bad_files") or {}
    dropped_files, unlabelled = bad.get("dropped", 0), (bad.get("unlabelled") or {}).get("dropped", 0)
    if dropped_files or unlabelled:
        lines.append(f"- import `--bad-files {bad.get('mode')}`: {dropped_files} files dropped (unreadable, without "
                     f"an image, or duplicate entries); `--unlabelled {(bad.get('unlabelled') or {}).get('mode')}`: "
                     f"{unlabelled} images without annotations dropped (data/labels/import_report.csv lists each)")
    fixed = s.get("snapshot_invalid")
    if fixed and (fixed.get("dropped") or fixed.get("clipped")):
        lines.append(f"- snapshot `dataset.invalid: {fixed.get('mode')}`: {fixed.get('dropped', 0)} boxes dropped, "
                     f"{fixed.get('clipped', 0)} clipped (the manifest's stats.snapshot_invalid.boxes lists each)")
    lines.append("")
    lines += _md_table(["class", "objects", "change"],
                       [[c, n, f"{record['changelog']['per_class_delta'].get(c, 0):+d}" if prev else "new"]
                        for c, n in s["per_class"].items()])
    if record.get("fingerprint"):  # sizes that decide preprocessing (dataset/fingerprint.py)
        lines += ["", "## Fingerprint", *fingerprint_lines(record["fingerprint"])]
    if prev:
        lines += ["", f"## Changes since {prev}", *datadiff.summary_lines(record["changelog"])]
    lines += check.notes_lines(record["health"]) if record.get("health") else []
    lines += ["", "## Notes", record["notes"] or "(none)", ""]
    return "\n".join(lines)


def release_dataset(root: Path = Path("."), version: str | None = None, level: str | None = None,
                    notes: str = "", remote: str | None = None) -> dict:
    root = Path(root)
    head = require_clean_tree(root)
    preflight.require(preflight.preflight(root, checks=("data pinned", "params composed", "seeds set")),
                      "release a dataset")  # code is covered by the clean tree above
    require_up_to_date(root, DATA_STAGES)
    remote = _require_remote(root, remote)
    current = datadiff.load_state(root)
    newest = registry.newest(root, "dataset")
    diff = datadiff.dataset_diff(datadiff.load_state(root, newest[1]), current, tasks.of_manifest) if newest else None
    required, reason = (diff["required_bump"], diff["reason"]) if diff else ("minor", "first release")
    tag, chosen = choose_version(root, "DS-", newest, required, reason, version, level, notes)

    splits = current.splits or {}
    members = splits.get("splits", {})
    if not current.manifest["stats"].get("images"):
        raise CvreproError(f"{MANIFEST}: 0 images: an empty dataset is not released")
    require_no_empty_split(splits.get("counts") or {}, splits.get("ratios") or {}, str(SPLITS),
                           splits.get("fillable") or SPLIT_NAMES)
    health = check.for_release(current.manifest, current.annotations, current.splits,  # strict: leaks refuse
                               load(root / PARAMS), root)
    record = {
        "schema": "cvrepro.release.dataset/1",
        "version": tag,
        "previous": newest[1] if newest else None,
        "bump": chosen,
        "required_bump": required if newest else None,
        "created_utc": _now(),
        "source_commit": head,
        "task": current.manifest.get("task"),
        "snapshot_id": current.manifest["snapshot_id"],
        "class_map": current.manifest["class_map"],
        "stats": current.manifest["stats"],
        "fingerprint": current.manifest.get("fingerprint"),
        "inputs": {k: v for k, v in _lock_hashes(root).items()
                   if k in ("data/raw", "data/labels", str(MANIFEST), str(SPLITS))},
        "split": {k: splits.get(k) for k in ("method", "seed", "ratios", "group_key", "counts")}
        | {"membership_sha256": hashlib.sha256(json.dumps(members, sort_keys=True).encode()).hexdigest()},
        "changelog": datadiff.truncated(diff) if diff else None,
        "health": health,
        "notes": notes,
    }
    notes_md = dataset_notes(record)
    summary = f"{chosen} ({reason})" if newest else "first dataset release"
    _publish(root, tag, record, notes_md, f"Release {tag}: {summary}", remote, head)
    return record


# --------------------------------------------------------------------------- models


def architecture(weights: Path, name: str) -> dict:
    """The model's name and a fingerprint of its parameter names and shapes: equal
    fingerprints load each other's weights; a change means a new architecture."""
    import torch

    state = torch.load(weights, map_location="cpu", weights_only=True)
    shapes = [[k, list(v.shape)] for k, v in state.items()]
    digest = hashlib.sha256(json.dumps(shapes).encode()).hexdigest()
    return {"name": name, "fingerprint": digest[:16],
            "parameters": int(sum(v.numel() for v in state.values() if v.is_floating_point()))}


def _split_metrics(metrics: dict) -> dict:
    return {s: m for s, m in metrics.items() if isinstance(m, dict)}


def metric_deltas(old: dict, new: dict) -> dict:
    """{split: {metric: new - old}} for scalar metrics, and per class."""
    out: dict = {}
    for split, m in _split_metrics(new).items():
        o = old.get(split) or {}
        d = {k: round(v - o[k], 6) for k, v in m.items()
             if isinstance(v, (int, float)) and isinstance(o.get(k), (int, float))}
        pc = {c: {k: round(v - o["per_class"][c][k], 6) for k, v in cm.items()
                  if isinstance(v, (int, float)) and isinstance(o.get("per_class", {}).get(c, {}).get(k), (int, float))}
              for c, cm in (m.get("per_class") or {}).items()}
        out[split] = {**d, "per_class": pc}
    return out


def params_changed(old: dict, new: dict) -> dict[str, list]:
    """{dotted key: [old, new]} for every differing value (None where a side lacks the key)."""
    return {k: [None if o is MISSING else o, None if n is MISSING else n] for k, o, n in changed_keys(old, new)}


def model_bump(previous: dict | None, record: dict) -> tuple[str | None, str]:
    if previous is None:
        return "minor", "first model release"
    if previous["architecture"]["fingerprint"] != record["architecture"]["fingerprint"]:
        return "major", f"architecture changed ({previous['architecture']['name']} -> {record['architecture']['name']})"
    if previous["class_map"] != record["class_map"]:
        return "major", "class map (output format) changed"
    hyper = {k: v for k, v in run_params(record["params"]).items() if k != "experiment"}
    old_hyper = {k: v for k, v in run_params(previous["params"]).items() if k != "experiment"}
    if previous["snapshot_id"] != record["snapshot_id"]:
        return "minor", f"data changed ({previous['dataset_version']} -> {record['dataset_version']})"
    if hyper != old_hyper:
        return "minor", "hyper-parameters changed: " + ", ".join(params_changed(old_hyper, hyper))
    if previous["artifacts"].get(str(WEIGHTS)) == record["artifacts"].get(str(WEIGHTS)):
        return None, "same weights, data and parameters"
    return "patch", "same architecture, data and parameters; code changed"


def caveats(record: dict) -> list[str]:
    out = []
    metrics = _split_metrics(record["metrics"])
    test = metrics.get("test") or metrics.get("val") or {}
    headline = next((k for k in ("AP50", "mIoU", "accuracy") if k in test), None)
    images = record.get("split_counts", {})
    if images.get("test") is not None and images["test"] < 200:
        out.append(f"The test split has only {images['test']} images: differences under a few points are noise.")
    per_class = test.get("per_class") or {}
    if headline and per_class:
        key = {"mIoU": "IoU", "accuracy": "recall"}.get(headline, headline)  # the per-class form of the headline
        scores = {c: m.get(key) for c, m in per_class.items() if isinstance(m.get(key), (int, float))}
        if scores:
            worst = min(scores, key=scores.get)
            out.append(f"Weakest class on test: {worst} ({key} {scores[worst]:.3f}).")
    for key, groups in test.items():
        if key != "per_class" and isinstance(groups, dict) and headline:
            vals = {g: v.get(headline) for g, v in groups.items() if isinstance(v, dict) and isinstance(v.get(headline), (int, float))}
            if len(vals) > 1:
                worst = min(vals, key=vals.get)
                out.append(f"Weakest {key} slice on test: {worst} ({headline} {vals[worst]:.3f}).")
    for split, d in (record.get("deltas") or {}).items():
        drops = [f"{k} {v:+.3f}" for k, v in d.items() if isinstance(v, float) and v < -0.01]
        if drops:
            out.append(f"Regressions on {split} against {record['previous']}: {', '.join(drops)}.")
    if record["lineage"].get("dirty_at_run"):
        out.append("The run that produced these artifacts started from uncommitted changes; the release commit's "
                   "dvc.lock pins the artifacts themselves.")
    out.append("Trained from scratch on the listed dataset only; no pretrained weights.")
    return out


def model_notes(record: dict) -> str:
    prev = record.get("previous")
    lines = [f"# {record['version']}", "",
             f"Model release: {record['architecture']['name']} ({record['architecture']['parameters']:,} parameters) "
             f"trained on {record['dataset_version']}.", "",
             f"- dataset: {record['dataset_version']} (`{record['snapshot_id']}`)",
             f"- made from commit `{record['source_commit']}`; config {record['config_id']}",
             f"- weights sha256: `{record['artifacts'][str(WEIGHTS)]}`",
             f"- bump: {record['bump']}" + (f" over {prev} ({record['bump_reason']})" if prev else ""), "",
             "## Metrics", ""]
    metrics = _split_metrics(record["metrics"])
    scalar_keys = sorted({k for m in metrics.values() for k, v in m.items() if isinstance(v, (int, float))})
    rows = []
    for split, m in metrics.items():
        d = (record.get("deltas") or {}).get(split, {})
        rows.append([split] + [f"{m[k]:.3f}" + (f" ({d[k]:+.3f})" if k in d else "") if k in m else "" for k in scalar_keys])
    lines += _md_table(["split", *scalar_keys], rows)
    for split, m in metrics.items():
        if m.get("per_class"):
            keys = sorted({k for cm in m["per_class"].values() for k in cm})
            lines += ["", f"Per class ({split}):", ""]
            lines += _md_table(["class", *keys], [[c, *(f"{cm[k]:.3f}" if isinstance(cm.get(k), (int, float)) else "n/a"
                                                        for k in keys)]  # None: e.g. precision of a class never predicted
                                                  for c, cm in m["per_class"].items()])
    if prev and record.get("params_changed"):
        lines += ["", f"## Parameters changed since {prev}", ""]
        lines += [f"- `{k}`: {a!r} -> {b!r}" for k, (a, b) in record["params_changed"].items()]
    lines += ["", "## Caveats", *[f"- {c}" for c in record["caveats"]], "", "## Notes", record["notes"] or "(none)", ""]
    return "\n".join(lines)


def release_model(root: Path = Path("."), version: str | None = None, level: str | None = None,
                  notes: str = "", remote: str | None = None) -> dict:
    root = Path(root)
    head = require_clean_tree(root)
    preflight.require(preflight.preflight(root, version=version), "release a model")
    require_up_to_date(root)
    remote = _require_remote(root, remote)
    manifest = read_json(root / MANIFEST)
    lineage = read_json(root / LINEAGE)
    snapshot_id = manifest["snapshot_id"]
    if lineage.get("dataset", {}).get("snapshot_id") != snapshot_id:
        raise CvreproError(f"{LINEAGE}: records snapshot {lineage.get('dataset', {}).get('snapshot_id')} but the "
                           f"manifest is {snapshot_id}: rerun `dvc repro`")
    dataset_version = registry.dataset_version(root, snapshot_id)
    if dataset_version is None:
        raise CvreproError(f"the model was trained on snapshot {snapshot_id}, which is not a released dataset: "
                           "run `cvrepro release dataset` for it first (a model is always pinned to a DS version)")
    cfg = load(root / PARAMS)  # the project's own config; previous["params"] is another revision's record
    artifacts = {str(p): sha256_file(root / p) for p in MODEL_ARTIFACTS}
    if lineage.get("artifacts", {}).get(str(WEIGHTS)) != artifacts[str(WEIGHTS)]:
        raise CvreproError(f"{WEIGHTS}: its sha256 differs from {LINEAGE}: rerun `dvc repro evaluate`")
    metrics = read_json(root / METRICS)
    newest = registry.newest(root, "model")
    previous = registry.record_at(root, newest[1]) if newest else None
    record = {
        "schema": "cvrepro.release.model/1",
        "previous": newest[1] if newest else None,
        "created_utc": _now(),
        "source_commit": head,
        "dataset_version": dataset_version,
        "snapshot_id": snapshot_id,
        "config_id": config_id(cfg),
        "params": cfg.as_dict(),  # as written: the record's bytes and config ID do not change
        "architecture": architecture(root / WEIGHTS, cfg.model.name),
        "class_map": read_json(root / LABEL_MAP),
        "metrics": metrics,
        "artifacts": artifacts,
        "dvc_md5": {k: v for k, v in _lock_hashes(root).items() if k.startswith(("models/", "data/processed"))},
        "seeds": lineage.get("seeds"),
        "split_counts": read_json(root / SPLITS).get("counts", {}),
        "lineage": {"run_id": lineage.get("run_id"), "time_utc": lineage.get("time_utc"),
                    "commit_at_run": lineage.get("code", {}).get("commit"),
                    "dirty_at_run": lineage.get("code", {}).get("dirty"), "environment": lineage.get("environment"),
                    "artifacts": lineage.get("artifacts"),  # sha256 of weights, processed data, manifest
                    "hardware": lineage.get("hardware")},  # device, CPU kernel level, precision, world size
        "notes": notes,
    }
    required, reason = model_bump(previous, record)
    tag, chosen = choose_version(root, "v", newest, required, reason, version, level, notes)
    record = {"version": tag, "bump": chosen, "bump_reason": reason, **record}
    record["deltas"] = metric_deltas(previous["metrics"], metrics) if previous else None
    record["params_changed"] = params_changed(previous["params"], record["params"]) if previous else None
    record["caveats"] = caveats(record)
    notes_md = model_notes(record)
    record["export"], bundle = export.make_bundle(root, record, previous)  # ONNX with parity, safetensors, card
    try:
        _publish(root, tag, record, notes_md, f"Release {tag}: {chosen} ({reason}), on {dataset_version}", remote,
                 head, extra=bundle)
    except BaseException:
        export.discard(root, tag)
        raise
    return record
