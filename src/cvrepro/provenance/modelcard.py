"""The model card of a release (`models/releases/<tag>/model_card.md`, committed with the release).

Written for the people who consume a model rather than train it: what it is for, what it
was trained on, how well it does overall, per class and per slice (beside the previous
release), where it is weakest, what to be careful about, where it came from and how to load
it. Every number comes from the release record and the dataset release it names: nothing
here is typed by hand except the `--notes`.
"""

from __future__ import annotations

from pathlib import Path

from cvrepro.config.params import recorded
from cvrepro.core.fileio import CvreproError, atomic_write_text

HEADLINES = ("AP50", "AP", "mIoU", "accuracy", "macro_f1")  # the metric a task is judged by comes first
PER_CLASS_KEY = {"mIoU": "IoU", "accuracy": "recall"}  # the per-class form of a headline


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def headline(metrics: dict) -> str | None:
    for split in ("test", "val"):
        m = metrics.get(split) or {}
        for k in HEADLINES:
            if _num(m.get(k)):
                return k
    return None


def slices(split_metrics: dict) -> dict[str, dict[str, dict]]:
    """{slice key: {value: metrics}}: the dict-valued entries of a split other than per_class."""
    return {k: v for k, v in split_metrics.items()
            if k != "per_class" and isinstance(v, dict) and v and all(isinstance(g, dict) for g in v.values())}


def weak_spots(metrics: dict) -> list[str]:
    """The worst class and the worst value of each slice on test (else val), by the headline metric."""
    key = headline(metrics)
    split = "test" if metrics.get("test") else "val"
    m = metrics.get(split) or {}
    out = []
    if key is None:
        return out
    pc_key = PER_CLASS_KEY.get(key, key)
    scores = {c: cm.get(pc_key) for c, cm in (m.get("per_class") or {}).items() if _num(cm.get(pc_key))}
    if scores:
        worst = min(scores, key=scores.get)
        best = max(scores, key=scores.get)
        out.append(f"Worst class on {split}: **{worst}** ({pc_key} {scores[worst]:.3f}"
                   + (f"; best {best} {scores[best]:.3f})." if scores[best] > scores[worst] else "; all classes equal)."))
    for name, groups in slices(m).items():
        vals = {g: v.get(key) for g, v in groups.items() if _num(v.get(key))}
        if len(vals) > 1:
            worst = min(vals, key=vals.get)
            best = max(vals, key=vals.get)
            out.append(f"Worst `{name}` slice on {split}: **{worst}** ({key} {vals[worst]:.3f}"
                       + (f"; best {best} {vals[best]:.3f})." if vals[best] > vals[worst] else "; all slices equal)."))
    return out


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def _cell(v, old) -> str:
    if not _num(v):
        return ""
    if isinstance(v, int):  # counts (images per slice)
        return str(v) + (f" ({old})" if _num(old) and old != v else "")
    return f"{v:.3f}" + (f" ({old:.3f}, {v - old:+.3f})" if _num(old) else "")


def metrics_section(metrics: dict, previous: dict | None) -> list[str]:
    prev_metrics = (previous or {}).get("metrics") or {}
    lines = []
    if previous:
        lines += [f"In brackets: {previous['version']}, and the change.", ""]
    splits = {s: m for s, m in metrics.items() if isinstance(m, dict)}
    keys = sorted({k for m in splits.values() for k, v in m.items() if _num(v)})
    lines += ["### Overall", ""]
    lines += _table(["split", *keys], [[s, *(_cell(m.get(k), (prev_metrics.get(s) or {}).get(k)) for k in keys)]
                                       for s, m in splits.items()])
    for s, m in splits.items():
        old = prev_metrics.get(s) or {}
        if m.get("per_class"):
            ck = sorted({k for cm in m["per_class"].values() for k, v in cm.items() if _num(v)})
            lines += ["", f"### Per class ({s})", ""]
            lines += _table(["class", *ck], [[c, *(_cell(cm.get(k), (old.get("per_class") or {}).get(c, {}).get(k))
                                                   for k in ck)] for c, cm in m["per_class"].items()])
        for name, groups in slices(m).items():
            gk = sorted({k for g in groups.values() for k, v in g.items() if _num(v)})
            lines += ["", f"### Per `{name}` slice ({s})", ""]
            lines += _table([name, *gk], [[g, *(_cell(gm.get(k), (old.get(name) or {}).get(g, {}).get(k)) for k in gk)]
                                          for g, gm in groups.items()])
    return lines


def render(record: dict, dataset: dict | None, previous: dict | None) -> str:
    tag, arch, lineage = record["version"], record["architecture"], record.get("lineage") or {}
    params = record["params"]  # as the release recorded them (another revision's): read with `recorded`
    task = record.get("task") or (dataset or {}).get("task") or recorded(params, "task", "")
    size = recorded(params, "preprocess.size", "?")
    env = lineage.get("environment") or {}
    export = record.get("export") or {}
    classes = ", ".join(record["class_map"].values())
    lines = [f"# Model card: {tag}", "",
             f"{arch['name']} ({arch['parameters']:,} parameters), {task}, trained on {record['dataset_version']}. "
             f"Released {record['created_utc']}" + (f"; follows {previous['version']}." if previous else "."), "",
             "## Intended use", "",
             f"{task.capitalize()} of {classes} in images like those of {record['dataset_version']} "
             f"(resized to {size} x {size}). "
             "Not evaluated on any other image source: check it on a sample of your own images before use.", ""]
    if record.get("notes"):
        lines += [f"Release notes: {record['notes']}", ""]
    lines += ["## Training data", ""]
    if dataset:
        s = dataset.get("stats", {})
        lines += [f"{record['dataset_version']} (snapshot `{record['snapshot_id'][:16]}`): {s.get('images')} images, "
                  f"{s.get('objects')} objects; split {dataset.get('split', {}).get('counts') or record.get('split_counts')} "
                  f"(seed {dataset.get('split', {}).get('seed')}).", ""]
        lines += _table(["class", "objects (all splits)"], [[c, n] for c, n in (s.get("per_class") or {}).items()])
        lines += [""]
    val = (record["metrics"].get("val") or {})
    for name, groups in slices(val).items():
        counts = {g: v.get("images") for g, v in groups.items() if _num(v.get("images"))}
        if counts:
            lines += [f"Slices by `{name}` (val images): " + ", ".join(f"{g} {n}" for g, n in counts.items()), ""]
    lines += ["## Metrics", "", *metrics_section(record["metrics"], previous), ""]
    lines += ["## Known weak spots", "", *([f"- {w}" for w in weak_spots(record["metrics"])] or ["- none measured"]), ""]
    lines += ["## Caveats", "", *[f"- {c}" for c in record.get("caveats", [])], ""]
    seeds = record.get("seeds") or {}
    lines += ["## Lineage", "",
              f"- code commit `{record['source_commit']}` (run at `{lineage.get('commit_at_run')}`"
              f"{', dirty' if lineage.get('dirty_at_run') else ''}); config ID `{record['config_id']}`",
              f"- dataset {record['dataset_version']}, snapshot `{record['snapshot_id']}`",
              "- seeds: " + ", ".join(f"{k} {v}" for k, v in seeds.items()),
              f"- hardware: {env.get('machine', '?')}, {env.get('platform', '?')}, torch {env.get('torch', '?')}"
              + (f", {env['torch_threads']} threads" if env.get("torch_threads") else ""),
              f"- weights sha256 `{record['artifacts'].get('models/model.pt')}`"]
    for path, digest in (export.get("files") or {}).items():
        lines.append(f"- {Path(path).name} sha256 `{digest}`")
    if previous:
        lines.append(f"- previous release {previous['version']}: {record.get('bump')} bump ({record.get('bump_reason')})")
    lines += ["", "## How to load it", "", "```python", "import cvrepro",
              f'model = cvrepro.load_model("{tag}")                    # PyTorch',
              f'model = cvrepro.load_model("{tag}", runtime="onnx")    # ONNX Runtime',
              'prediction = model("image.jpg")', "```", ""]
    if export:
        p = export.get("parity", {})
        lines += [f"Without this package: `model.onnx` (opset {export.get('opset')}, batch {export.get('batch')}) takes "
                  f"`images`, {export['input_spec']['dtype']} {export['input_spec']['shape']} "
                  f"({export['input_spec']['layout']}, {export['input_spec']['resize']}); the graph applies "
                  f"{export['input_spec']['in_graph']}. Outputs:", ""]
        lines += [f"- `{k}`: {v}" for k, v in (export.get("output_spec") or {}).items()]
        lines += ["", f"Parity with PyTorch on {p.get('images')} {p.get('split', 'val')} images: "
                  + ", ".join(f"{k} {v}" for k, v in p.items() if k not in ("ok", "tolerance", "images", "split"))
                  + f" (tolerance {p.get('tolerance')}).", ""]
    return "\n".join(lines)


def write(root: Path, record: dict, previous: dict | None, path: Path) -> None:
    from cvrepro.provenance.registry import record_at

    try:
        dataset = record_at(Path(root), record["dataset_version"])
    except CvreproError:
        dataset = None
    atomic_write_text(path, render(record, dataset, previous))
