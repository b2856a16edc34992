"""`cvrepro diff vA vB`: the triage question, "what changed between two model
releases, and what got worse?", answered from the two release records and git.

Factors: code (commits and files changed between the release commits), data
(the two DS versions and their dataset diff), parameters (changed keys). Metrics:
overall, per class and per slice (e.g. time_of_day), regressions first, largest
first.
"""

from __future__ import annotations

from pathlib import Path

from cvrepro import tasks
from cvrepro.dataset import diff as datadiff
from cvrepro.provenance.registry import record_at
from cvrepro.provenance.release import params_changed
from cvrepro.core.vcs import git

# Files a release commit adds or the pipeline rewrites: not a code change.
NOT_CODE = ("data/releases/", "models/releases/", "dvc.lock", "metrics/", "models/train.json")
CODE_PREFIXES = ("src/", "conf/", "dvc.yaml", "params.yaml", "pyproject.toml")


def _code_changes(root: Path, a: str, b: str) -> dict:
    commits = git(root, "log", "--format=%h %s", f"{a}..{b}").splitlines()
    files = [f for f in git(root, "diff", "--name-only", a, b).splitlines() if f]
    code = [f for f in files if f.startswith(CODE_PREFIXES) and not f.startswith(NOT_CODE)]
    return {"commits": commits, "files": files, "code_files": code, "changed": bool(code)}


def _metric_rows(old: dict, new: dict) -> list[dict]:
    """One row per comparable scalar: where (split / class / slice), metric, old, new, delta."""
    rows = []

    def add(kind: str, where: str, o: dict, n: dict) -> None:
        for k, v in n.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(o.get(k), (int, float)) \
                    and k != "images":
                rows.append({"kind": kind, "where": where, "metric": k, "old": o[k], "new": v,
                             "delta": round(v - o[k], 6)})

    for split, n in new.items():
        o = old.get(split)
        if not isinstance(n, dict) or not isinstance(o, dict):
            continue
        add("overall", split, o, n)
        for key, groups in n.items():
            if not isinstance(groups, dict) or not isinstance(o.get(key), dict):
                continue
            kind, label = ("class", "class") if key == "per_class" else ("slice", key)
            for name, values in groups.items():
                if isinstance(values, dict) and isinstance(o[key].get(name), dict):
                    add(kind, f"{split} {label}={name}", o[key][name], values)
    return rows


def triage(root: Path, a: str, b: str) -> dict:
    root = Path(root)
    ra, rb = record_at(root, a), record_at(root, b)
    ca, cb = ra["source_commit"], rb["source_commit"]
    code = _code_changes(root, ca, cb)
    same_data = ra["snapshot_id"] == rb["snapshot_id"]
    data = {"from": ra["dataset_version"], "to": rb["dataset_version"], "changed": not same_data}
    if not same_data:
        diff = datadiff.dataset_diff(datadiff.load_state(root, ra["dataset_version"]),
                                     datadiff.load_state(root, rb["dataset_version"]), tasks.of_manifest)
        data.update(required_bump=diff["required_bump"], reason=diff["reason"],
                    summary=datadiff.summary_lines(diff))
    changed = params_changed(ra["params"], rb["params"])  # both records' params as written, whole
    hyper = {k: v for k, v in changed.items() if not k.startswith("experiment.")}
    rows = _metric_rows(ra["metrics"], rb["metrics"])
    regressions = sorted((r for r in rows if r["delta"] < 0), key=lambda r: r["delta"])
    improvements = sorted((r for r in rows if r["delta"] > 0), key=lambda r: -r["delta"])
    # The largest regression of each kind: overall, per class, per slice (e.g. night images).
    largest = {kind: next((r for r in regressions if r["kind"] == kind), None) for kind in ("overall", "class", "slice")}
    factors = [name for name, on in (("code", code["changed"]), ("data", data["changed"]), ("params", bool(hyper)))
               if on]
    return {
        "from": {"version": a, "commit": ca, "dataset": ra["dataset_version"], "config_id": ra["config_id"]},
        "to": {"version": b, "commit": cb, "dataset": rb["dataset_version"], "config_id": rb["config_id"]},
        "factors": factors,
        "code": code,
        "data": data,
        "params": changed,
        "architecture_changed": ra["architecture"]["fingerprint"] != rb["architecture"]["fingerprint"],
        "regressions": regressions,
        "largest_regression": largest,
        "improvements": improvements,
        "unchanged": len(rows) - len(regressions) - len(improvements),
    }


def _row(r: dict) -> str:
    return f"  {r['where']:<28} {r['metric']:<8} {r['old']:.3f} -> {r['new']:.3f}  ({r['delta']:+.3f})"


def format_triage(t: dict, top: int = 10) -> str:
    a, b = t["from"], t["to"]
    out = [f"{a['version']} -> {b['version']}: changed " + (", ".join(t["factors"]) or "nothing")]
    code = t["code"]
    out.append(f"code: {len(code['commits'])} commits, {len(code['code_files'])} code files changed"
               + (": " + ", ".join(code["code_files"][:10]) if code["code_files"] else ""))
    out += [f"  {c}" for c in code["commits"][:10]]
    d = t["data"]
    out.append(f"data: {d['from']} -> {d['to']}" + (f" ({d['required_bump']}: {d['reason']})" if d["changed"] else
                                                     " (same snapshot: no data change)"))
    out += [f"  {line[2:]}" for line in d.get("summary", [])]
    out.append("params: " + (", ".join(f"{k} {v[0]!r} -> {v[1]!r}" for k, v in t["params"].items()) or "no change"))
    if t["architecture_changed"]:
        out.append("architecture: changed")
    out.append(f"regressions ({len(t['regressions'])}, largest first):")
    for kind in ("overall", "slice", "class"):
        rows = [r for r in t["regressions"] if r["kind"] == kind]
        if rows:
            out.append(f" by {kind}:")
            out += [_row(r) for r in rows[:top]]
    if not t["regressions"]:
        out.append("  none")
    out.append(f"improvements ({len(t['improvements'])}):")
    out += [_row(r) for r in t["improvements"][:top]] or ["  none"]
    return "\n".join(out)
