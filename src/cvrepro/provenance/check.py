"""`cvrepro check`: a dataset health report (class balance, unlabelled images, box sizes and shapes,
boxes per image, double labels, duplicates, leakage across splits, label conflicts), as text, JSON or
a picture sheet of the worst cases, and the Health section of `cvrepro release dataset`.

The computations are in dataset/health.py; a task's own checks come through the Task interface
(`health_findings`, `label_signature`). Thresholds and the release policy are the `check` params
(conf/check/default.yaml), which no stage reads and the config ID leaves out.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import sys
from pathlib import Path

from cvrepro import tasks
from cvrepro.config.params import POLICIES
from cvrepro.config.schema import Check
from cvrepro.config.typed import ParamsLike, typed
from cvrepro.core.fileio import CvreproError
from cvrepro.core.paths import LABEL_ISSUES, MANIFEST, RAW_DIR

SCHEMA = "cvrepro.check/1"
ORDER = ("leakage", "label_conflicts", "duplicates", "class_imbalance", "unlabeled_images", "tiny_boxes",
         "huge_boxes", "aspect_outliers", "boxes_per_image", "near_identical_boxes")


def settings(params: ParamsLike, policy: str | None = None) -> Check:
    """The `check` params (schema.Check: absent keys, as in a params.yaml composed before conf/check existed, take
    its defaults); `policy` (from --policy) wins."""
    cfg = typed(params).check
    if policy is None:
        return cfg
    if policy not in POLICIES:
        raise CvreproError(f"--policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    return dataclasses.replace(cfg, policy=policy)


def gather(manifest: dict, index: dict, splits: dict | None, cfg: Check, root: Path | None = None) -> dict:
    """The health report of one dataset state (manifest, labels index, splits.json or None); cfg: `settings`."""
    from cvrepro.dataset import health

    task = tasks.of_record(manifest, str(MANIFEST))
    n = cfg.max_items
    found = {"class_imbalance": health.class_imbalance(manifest["stats"].get("per_class") or {},
                                                       cfg.imbalance_ratio, n),
             "unlabeled_images": health.unlabeled_images(manifest["files"], n),
             **task.health_findings(manifest, index, cfg)}
    source, groups = health.duplicate_groups(manifest)
    found["duplicates"] = health.duplicates(groups, source, n)
    found["label_conflicts"] = health.conflicts(groups, _signatures(task, manifest, index, groups), n)
    stale = splits is not None and splits.get("snapshot_id") not in (None, manifest.get("snapshot_id"))
    if splits is not None and not stale:  # a split of another snapshot would name the wrong images
        found["leakage"] = health.leaks(groups, health.membership(splits), n)
    findings = {k: found[k] for k in ORDER if k in found} | {k: v for k, v in found.items() if k not in ORDER}
    report = {"schema": SCHEMA, "task": task.name, "snapshot_id": manifest.get("snapshot_id"),
              "images": manifest["stats"].get("images"), "objects": manifest["stats"].get("objects"),
              "policy": cfg.policy, "thresholds": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "policy"},
              "splits_checked": splits is not None and not stale, "findings": findings,
              "blocking": health.blocking(findings)}
    issues = label_issue_count(root) if root is not None else None
    if issues is not None:
        report["label_issues"] = issues
    return report


def _signatures(task, manifest: dict, index: dict, groups: list[dict]):
    """path -> the task's label signature, for the images of exact groups only (labels looked up once)."""
    wanted = {p for g in groups for p in g["members"]}
    entries = {f["path"]: f for f in manifest["files"] if f["path"] in wanted}
    ids = {f["image_id"]: p for p, f in entries.items()}
    labels: dict[str, list] = {p: [] for p in entries}
    if ids:
        for a in index.get("annotations") or []:
            p = ids.get(a.get("image_id"))
            if p is not None:
                labels[p].append(a)
    return lambda path: task.label_signature(entries[path], labels[path]) if path in entries else None


def label_issue_count(root: Path) -> int | None:
    """Rows of metrics/label_issues/label_issues.csv (`cvrepro label-issues`) under `root`, or None without one."""
    path = Path(root) / LABEL_ISSUES
    if not path.is_file():
        return None
    return count_csv_rows(path.read_text(encoding="utf-8", errors="replace"))


def count_csv_rows(text: str) -> int:
    rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    return max(0, len(rows) - 1)  # less the header


def load_workspace(root: Path, params: ParamsLike) -> tuple[dict, dict, dict | None]:
    """(manifest, labels index, splits or None) of the work tree, each missing one named."""
    from cvrepro.core.fileio import read_json
    from cvrepro.core.paths import SPLITS
    from cvrepro.dataset.index import annotations_file

    cfg = typed(params)
    if not (root / MANIFEST).is_file():
        raise CvreproError(f"{MANIFEST}: not found; run `dvc repro snapshot` (or `cvrepro snapshot`) first")
    manifest = read_json(root / MANIFEST)
    index_path = annotations_file(cfg)
    if not (root / index_path).is_file():
        raise CvreproError(f"{index_path}: not found (the labels index named by params.yaml dataset.annotations)")
    splits = read_json(root / SPLITS) if (root / SPLITS).is_file() else None
    return manifest, read_json(root / index_path), splits


# --------------------------------------------------------------------------- text


def _example(it: dict) -> str:
    if "a" in it:
        return f"{it['a']} = {it['b']}" + (f" ({it['splits'][0]} / {it['splits'][1]})" if "splits" in it else "")
    if "members" in it:
        return ", ".join(it["members"])
    if "class" in it and "objects" in it:
        return f"{it['class']} {it['objects']}"
    if "bbox" in it:
        value = next((f"{k} {it[k]}" for k in ("area_fraction", "aspect", "iou") if k in it), "")
        return f"{it['path']} {it['class']} {it['bbox']} {value}".rstrip()
    return f"{it['path']}" + (f" ({it['boxes']} boxes)" if "boxes" in it else "")


def render_text(report: dict, examples: int = 3) -> str:
    marks = {"ok": "ok  ", "warn": "WARN", "error": "FAIL"}
    lines = [f"dataset health ({report['task']}, {report['images']} images, {report['objects']} objects; "
             f"policy {report['policy']})"]
    for name, f in report["findings"].items():
        lines.append(f"  {marks[f['level']]} {name}: {f['summary']}")
        if f["level"] != "ok":
            lines += [f"         {_example(it)}" for it in f["items"][:examples]]
            if f["count"] > examples and name != "class_imbalance":
                lines.append(f"         ... ({f['count']} in all; --json lists up to {report['thresholds']['max_items']:g})")
    if not report["splits_checked"]:
        lines.append("  note: no data/splits/splits.json of this snapshot: leakage not checked (run `dvc repro split`)")
    if "label_issues" in report:
        lines.append(f"  note: {report['label_issues']} label issues listed in {LABEL_ISSUES}")
    return "\n".join(lines)


def summary(report: dict) -> dict:
    """What a dataset release record keeps: counts per finding, the duplicates, and the blocking pairs."""
    f = report["findings"]
    dup = f["duplicates"]
    out = {"policy": report["policy"], "counts": {k: v["count"] for k, v in f.items()},
           "warnings": sum(1 for v in f.values() if v["level"] == "warn"),
           "errors": sum(1 for v in f.values() if v["level"] == "error"),
           "duplicates": {k: dup[k] for k in ("exact", "near", "images", "source")} | {"groups": dup["count"]},
           "blocking": report["blocking"]}
    if "label_issues" in report:
        out["label_issues"] = report["label_issues"]
    return out


def notes_lines(h: dict) -> list[str]:
    """The Health section of a dataset release's notes, from `summary`."""
    counts = h["counts"]
    lines = ["", "## Health", "",
             f"`cvrepro check` (policy {h['policy']}): {h['errors']} errors, {h['warnings']} warnings.", ""]
    lines += ["| check | count |", "|---|---|"] + [f"| {k} | {v} |" for k, v in counts.items()]
    d = h["duplicates"]
    lines += ["", f"- duplicates: {d['groups']} groups ({d['exact']} exact, {d['near']} near), {d['images']} "
                  f"redundant images (from {d['source']})"]
    if "label_issues" in h:
        lines.append(f"- label issues: {h['label_issues']} ({LABEL_ISSUES})")
    lines += [f"- {b}" for b in h["blocking"][:20]]
    return lines


def for_release(manifest: dict, index: dict, splits: dict | None, params: ParamsLike, root: Path) -> dict:
    """The health summary a dataset release records. Under `check.policy: strict` a leak across splits or a
    label conflict refuses the release (CvreproError naming the pairs); under `warn` each is said on stderr."""
    report = gather(manifest, index, splits, settings(params), root)
    if report["blocking"]:
        shown = "; ".join(report["blocking"][:10])
        if report["policy"] == "strict":
            raise CvreproError(f"check.policy strict: the dataset has {shown}; remove or relabel the copies "
                               "(or move them into one split), or set check.policy: warn")
        print(f"warning: dataset health: {shown} (check.policy warn: released anyway)", file=sys.stderr)
    return summary(report)


# --------------------------------------------------------------------------- picture sheet


def image_labels(manifest: dict, index: dict, paths: set[str]) -> dict[str, list[tuple[list | None, str]]]:
    """path -> its labels as (bbox xywh or None, class name), for the images a sheet shows."""
    names = manifest["class_map"]
    ids = {f["image_id"]: f["path"] for f in manifest["files"] if f["path"] in paths}
    out: dict[str, list] = {p: [] for p in ids.values()}
    for a in index.get("annotations") or []:
        p = ids.get(a.get("image_id"))
        if p is not None:
            out[p].append((a.get("bbox"), names.get(str(a.get("category_id")), str(a.get("category_id")))))
    return out


def sheet_cases(report: dict, limit: int, labels=lambda path: []) -> list[dict]:
    """The worst cases, blocking first: {title, panels: [(path, [(bbox xywh or None, caption)])], zoom}.
    `labels(path)`: an image's labels, drawn on copies and crowded images so a conflict shows."""
    cases: list[dict] = []
    f = report["findings"]
    for name in ("leakage", "label_conflicts"):
        for it in (f.get(name) or {}).get("items", []):
            tail = f" {it['splits'][0]}/{it['splits'][1]}" if "splits" in it else ""
            cases.append({"title": f"{name}{tail}", "panels": [(it["a"], labels(it["a"])), (it["b"], labels(it["b"]))]})
    for it in (f.get("duplicates") or {}).get("items", []):
        cases.append({"title": f"duplicates ({it['kind']})", "panels": [(p, labels(p)) for p in it["members"][:2]]})
    for name in ("near_identical_boxes", "tiny_boxes", "huge_boxes", "aspect_outliers"):
        for it in (f.get(name) or {}).get("items", []):
            boxes = [(it["bbox"], it["class"])] + ([(it["other_bbox"], it["class"])] if "other_bbox" in it else [])
            cases.append({"title": f"{name}: {it['class']}", "panels": [(it["path"], boxes), (it["path"], boxes[:1])],
                          "zoom": True})
    for name in ("boxes_per_image", "unlabeled_images"):
        for it in (f.get(name) or {}).get("items", []):
            cases.append({"title": name, "panels": [(it["path"], labels(it["path"]))]})
    return cases[:limit]


def write_sheet(report: dict, root: Path, out: Path, manifest: dict | None = None, index: dict | None = None) -> int:
    """One PNG of the worst cases (images from data/raw, boxes drawn, a zoom on a flagged box); returns the
    number of cases drawn (0: nothing written). With the manifest and labels index, copies show their labels."""
    from cvrepro.provenance.checksheet import draw_sheet

    limit = report["thresholds"]["sheet_items"]
    shown = {p for c in sheet_cases(report, limit) for p, _ in c["panels"]}
    known = image_labels(manifest, index, shown) if manifest is not None and index is not None else {}
    cases = sheet_cases(report, limit, lambda path: known.get(path, []))
    if cases:  # every check clean: no picture to look at
        draw_sheet(cases, Path(root) / RAW_DIR, out)
    return len(cases)
