"""`cvrepro report`: the registry as a static HTML site that opens from disk, no server.

One folder: `index.html` (every version, the lineage, metric trends overall and per slice),
one page per dataset version (facts, class counts, the diff against the previous version,
the models trained on it) and one per model version (metrics beside the previous release,
the model card, the prediction grid, PR curves or confusion matrix, the ONNX parity), a
stylesheet and the pictures. No JavaScript and no external resource: it renders the same on
any browser, offline, years later.

Everything is read at the release tags (the records, the cards, `metrics/plots/` as committed
with the release), in one `git cat-file --batch` per kind of file, so a registry of a hundred
versions renders in about a second (benchmarks/bench_report.py). The site is written to a
temporary folder and renamed over `--out`, so a reader never sees half a site.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
import shutil
import tempfile
from pathlib import Path

from cvrepro.core.paths import LABEL_ISSUES
from cvrepro.core.fileio import CvreproError
from cvrepro.core.paths import PLOTS_DIR
from cvrepro.core.vcs import git_blobs, run_git
from cvrepro.provenance import registry
from cvrepro.provenance.modelcard import headline, slices

MARKER = ".cvrepro-report"  # what lets `build` replace an existing --out folder
PICTURES = ("predictions_val.png", "confusion_val.png")  # copied as they are
CSV_PLOTS = ("pr_val.csv", "confusion_val.csv")  # drawn as SVG / tables
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:10px 24px}header a{color:#9ecbff;margin-right:16px}
main{max-width:1180px;margin:0 auto;padding:8px 24px 40px}
h1{font-size:22px;margin:16px 0 4px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #d8dce3}
h3{font-size:14px;margin:16px 0 6px}a{color:#0b5cad;text-decoration:none}a:hover{text-decoration:underline}
table{border-collapse:collapse;background:#fff;margin:4px 0 10px;font-size:13px}
th,td{border:1px solid #d8dce3;padding:3px 8px;text-align:left;vertical-align:top}th{background:#eef0f4}
td.n{text-align:right;font-variant-numeric:tabular-nums}.up{color:#1a7f37}.down{color:#c0362c}
.muted{color:#69707d}.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:14px}.grid>div{min-width:0}
.card{background:#fff;border:1px solid #d8dce3;border-radius:6px;padding:10px 14px}
.lineage{display:grid;grid-template-columns:minmax(200px,280px) 1fr;gap:6px 18px;align-items:start}
.node{display:inline-block;background:#fff;border:1px solid #b9c0cc;border-radius:12px;padding:1px 9px;margin:2px}
.node.ds{border-color:#6f8fcf}.node.m{border-color:#5aa874}code{font-size:12px;background:#eef0f4;padding:0 3px}
img.plot{max-width:100%;border:1px solid #d8dce3;background:#fff}svg{background:#fff;border:1px solid #d8dce3}
pre{background:#fff;border:1px solid #d8dce3;padding:8px;overflow:auto;font-size:12px}
"""
PALETTE = ("#0b5cad", "#c0362c", "#1a7f37", "#8250df", "#bf8700", "#0a7e8c", "#d63384", "#495057")


def e(v) -> str:
    return html.escape(str(v), quote=True)


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else e(v)


def page(title: str, body: str, depth: int) -> str:
    up = "../" * depth
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
            f"content='width=device-width,initial-scale=1'><title>{e(title)}</title>"
            f"<link rel='stylesheet' href='{up}style.css'></head><body><header><a href='{up}index.html'>"
            f"<b>cvrepro registry</b></a><a href='{up}index.html#datasets'>datasets</a><a href='{up}index.html#models'>"
            f"models</a><a href='{up}index.html#lineage'>lineage</a><a href='{up}index.html#trends'>trends</a></header>"
            f"<main>{body}</main></body></html>")


def table(header: list[str], rows: list[list[str]]) -> str:
    """`rows` hold HTML already (escape values with e())."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def delta_cell(v, old) -> str:
    if not _num(v):
        return "<td></td>"
    if not _num(old):
        return f"<td class='n'>{_fmt(v)}</td>"
    d = v - old
    if isinstance(v, int) and isinstance(old, int):  # counts (images per slice): no colour, no decimals
        return f"<td class='n'>{v}" + (f" <span class='muted'>({d:+d})</span>" if d else "") + "</td>"
    cls = "up" if d > 0.0005 else "down" if d < -0.0005 else "muted"
    return f"<td class='n'>{_fmt(v)} <span class='{cls}'>({d:+.3f})</span></td>"


def link(version: str, depth: int = 0) -> str:
    folder = "datasets" if version.startswith("DS-") else "models"
    return f"<a class='node {'ds' if folder == 'datasets' else 'm'}' href='{'../' * depth}{folder}/{e(version)}.html'>{e(version)}</a>"


# --------------------------------------------------------------------------- charts


def line_chart(title: str, xs: list[str], series: dict[str, list], width: int = 520, height: int = 220) -> str:
    """An SVG line chart of `series` (name -> values, None = no point) over the versions `xs`."""
    values = [v for vs in series.values() for v in vs if _num(v)]
    if not values or not xs:
        return ""
    lo, hi = min(values), max(values)
    bounded = lo >= 0 and hi <= 1  # scores and rates: keep the axis inside [0, 1]
    lo, hi = (lo - 0.05, hi + 0.05) if hi - lo < 1e-9 else (lo - (hi - lo) * 0.08, hi + (hi - lo) * 0.08)
    if bounded:
        lo, hi = max(lo, 0.0), min(hi, 1.0)
    left, right, top, bottom = 44, 12, 22, 34
    w, h = width - left - right, height - top - bottom
    x = (lambda i: left + w * (i / (len(xs) - 1) if len(xs) > 1 else 0.5))
    y = (lambda v: top + h * (1 - (v - lo) / (hi - lo)))
    parts = [f"<svg role='img' aria-label='{e(title)}' style='width:100%;max-width:{width}px;height:auto' "
             f"viewBox='0 0 {width} {height}'>",
             f"<text x='{left}' y='15' font-size='12' font-weight='600'>{e(title)}</text>"]
    digits = 2 if hi - lo >= 0.2 else 3 if hi - lo >= 0.02 else 4  # ticks that differ from each other
    for t in range(5):
        v = lo + (hi - lo) * t / 4
        parts.append(f"<line x1='{left}' x2='{left + w}' y1='{y(v):.1f}' y2='{y(v):.1f}' stroke='#eceef2'/>"
                     f"<text x='{left - 4}' y='{y(v) + 4:.1f}' font-size='10' text-anchor='end'>{v:.{digits}f}</text>")
    step = max(1, len(xs) // 8)
    shown = sorted(set(range(0, len(xs), step)) | {len(xs) - 1})
    for i in shown:
        anchor = "end" if i == len(xs) - 1 and len(xs) > 1 else "start" if i == 0 and len(xs) > 1 else "middle"
        parts.append(f"<text x='{x(i):.1f}' y='{top + h + 14}' font-size='10' text-anchor='{anchor}'>{e(xs[i])}</text>")
    for k, (name, vs) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        pts = [(x(i), y(v)) for i, v in enumerate(vs) if _num(v)]
        if len(pts) > 1:
            parts.append(f"<polyline fill='none' stroke='{color}' stroke-width='1.8' points='"
                         + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + "'/>")
        if len(xs) <= 40:
            parts += [f"<circle cx='{a:.1f}' cy='{b:.1f}' r='2.6' fill='{color}'/>" for a, b in pts]
        parts.append(f"<text x='{left + 8 + 90 * k}' y='{top + h + 28}' font-size='11' fill='{color}'>■ {e(name)}</text>")
    return "".join(parts) + "</svg>"


def pr_chart(text: str) -> str:
    """PR curves from `class,recall,precision` rows (learning/pictures.pr_curves_csv), or from the
    `recall,<class>...` columns that releases made before it wrote them."""
    rows = list(csv.reader(io.StringIO(text)))
    if len(rows) < 2:
        return ""
    recalls = [f"{r / 100:.2f}" for r in range(101)]
    if rows[0] == ["class", "recall", "precision"]:
        series: dict[str, list[float | None]] = {}
        for name, recall, precision in (r for r in rows[1:] if len(r) == 3):
            series.setdefault(name, [None] * 101)[round(float(recall) * 100)] = float(precision)
    elif rows[0][0] == "recall":
        recalls = [r[0] for r in rows[1:]]
        series = {n: [float(r[i + 1]) if r[i + 1] else None for r in rows[1:]] for i, n in enumerate(rows[0][1:])}
    else:
        return ""
    return line_chart("precision vs recall (val)", recalls, series, width=480)


def confusion_table(text: str) -> str:
    """A confusion matrix from `image_id,actual,predicted` rows (learning/pictures.confusion_csv)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or "actual" not in rows[0]:
        return ""
    names = sorted({r["actual"] for r in rows} | {r["predicted"] for r in rows})
    counts = {(a, p): 0 for a in names for p in names}
    for r in rows:
        counts[(r["actual"], r["predicted"])] += 1
    top = max(counts.values()) or 1
    body = [[f"<b>{e(a)}</b>"] + [f"<td class='n' style='background:rgba(11,92,173,{counts[(a, p)] / top * 0.55:.2f})'>"
                                   f"{counts[(a, p)]}</td>" for p in names] for a in names]
    return "<h3>Confusion (val; rows actual, columns predicted)</h3>" + table(["", *map(e, names)], body)


# --------------------------------------------------------------------------- markdown (the model cards)


def markdown(md: str) -> str:
    """The small markdown the cards and notes use: headings, tables, lists, code blocks, `code`, **bold**."""
    out, lines, i = [], md.splitlines(), 0

    def inline(s: str) -> str:
        s = e(s)
        s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
        return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)

    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append("<pre>" + e("\n".join(lines[i + 1 : j])) + "</pre>")
            i = j + 1
            continue
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(set(c) <= set("-: ") for c in cells):
                    rows.append(cells)
                i += 1
            out.append(table([inline(c) for c in rows[0]], [[inline(c) for c in r] for r in rows[1:]]))
            continue
        if line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        m = re.match(r"^(#{1,4}) (.*)", line)
        if m:
            level = min(len(m.group(1)) + 1, 4)  # the page has its own h1
            out.append(f"<h{level}>{inline(m.group(2))}</h{level}>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
        i += 1
    return "\n".join(out)


# --------------------------------------------------------------------------- reading the registry


def load(root: Path) -> dict:
    """Every release's record and committed files, read at its tag."""
    root = Path(root)
    res = run_git(root, "rev-parse", "--git-dir")
    if res is None or res.returncode != 0:
        raise CvreproError(f"{root.resolve()}: not a git repository; the registry is its release tags "
                           "(run `cvrepro report` in the project, or give --root)")
    facts = registry._tag_facts(root)
    tags = {kind: [t for _, t in registry.versions(root, prefix)] for kind, prefix in registry.KINDS.items()}
    every = tags["dataset"] + tags["model"]
    raw = git_blobs(root, [f"{t}:{registry.record_path(t).as_posix()}" for t in every])
    records = {}
    for t, data in zip(every, raw):
        if data is None:
            raise CvreproError(f"{registry.record_path(t)}: not found at tag {t}; is {t} a cvrepro release?")
        try:
            records[t] = json.loads(data)
        except json.JSONDecodeError as err:
            raise CvreproError(f"{registry.record_path(t)} at {t}: invalid JSON ({err.msg}, line {err.lineno})") from None
    wanted = [(t, name, f"{t}:{(PLOTS_DIR / name).as_posix()}") for t in tags["model"] for name in PICTURES + CSV_PLOTS]
    wanted += [(t, "card", f"{t}:models/releases/{t}/model_card.md") for t in tags["model"]]
    wanted += [(t, "label_issues", f"{t}:{LABEL_ISSUES.as_posix()}") for t in tags["dataset"]]
    wanted += [(t, "notes", f"{t}:{registry.record_path(t).with_suffix('.md').as_posix()}") for t in tags["model"]]
    files: dict[str, dict[str, bytes]] = {t: {} for t in every}
    for (t, name, _), data in zip(wanted, git_blobs(root, [w[2] for w in wanted])):
        if data is not None:
            files[t][name] = data
    return {"tags": tags, "records": records, "facts": facts, "files": files}


# --------------------------------------------------------------------------- pages


def index_page(reg: dict) -> str:
    recs, tags = reg["records"], reg["tags"]
    models_on: dict[str, list[str]] = {}
    for t in tags["model"]:
        models_on.setdefault(recs[t].get("dataset_version"), []).append(t)
    body = ["<h1>Registry</h1>",
            f"<p class='muted'>{len(tags['dataset'])} dataset versions, {len(tags['model'])} model versions; "
            "read from the release tags.</p>"]
    ds_rows = []
    for t in reversed(tags["dataset"]):
        r = recs[t]
        s = r.get("stats", {})
        ds_rows.append([link(t), e(reg["facts"].get(t, {}).get("date", "")[:10]), e(r.get("task", "")),
                        f"<td class='n'>{e(s.get('images'))}</td>", f"<td class='n'>{e(s.get('objects'))}</td>",
                        e(r.get("bump", "")), *health_cells(r, reg["files"].get(t, {})),
                        link(r["previous"]) if r.get("previous") else "",
                        " ".join(link(m) for m in models_on.get(t, []))])
    body += ["<h2 id='datasets'>Datasets</h2>",
             table(["version", "date", "task", "images", "objects", "bump", "health", "duplicates", "label issues",
                    "previous", "models trained on it"], ds_rows)]
    m_rows = []
    for t in reversed(tags["model"]):
        r = recs[t]
        key = headline(r.get("metrics", {}))
        val, test = (r["metrics"].get("val") or {}), (r["metrics"].get("test") or {})
        parity = (r.get("export") or {}).get("parity")
        m_rows.append([link(t), e(reg["facts"].get(t, {}).get("date", "")[:10]),
                       e(r.get("architecture", {}).get("name", "")), link(r["dataset_version"]),
                       f"<code>{e(r.get('config_id', ''))}</code>", e(key or ""),
                       f"<td class='n'>{_fmt(val.get(key, ''))}</td>", f"<td class='n'>{_fmt(test.get(key, ''))}</td>",
                       ("ok" if parity and parity.get("ok") else "—"), link(r["previous"]) if r.get("previous") else ""])
    body += ["<h2 id='models'>Models</h2>",
             table(["version", "date", "model", "trained on", "config", "metric", "val", "test", "ONNX parity",
                    "previous"], m_rows)]
    body += ["<h2 id='lineage'>Lineage</h2>", "<p class='muted'>Each dataset version (and the one it came from), "
             "beside the models trained on it (and the release each came after).</p><div class='lineage'>"]
    for t in tags["dataset"]:
        prev = recs[t].get("previous")
        body.append(f"<div>{link(t)}" + (f" <span class='muted'>from</span> {link(prev)}" if prev else "") + "</div><div>"
                    + (" ".join(link(m) + (f"<span class='muted'> after</span> {link(recs[m]['previous'])}"
                                          if recs[m].get("previous") else "") for m in models_on.get(t, []))
                       or "<span class='muted'>no model</span>") + "</div>")
    orphans = [m for m in tags["model"] if recs[m].get("dataset_version") not in recs]
    if orphans:
        body.append("<div class='muted'>dataset not in this registry</div><div>" + " ".join(map(link, orphans)) + "</div>")
    body.append("</div>")
    body += ["<h2 id='trends'>Metric trends</h2>", trends(reg)]
    return page("cvrepro registry", "".join(body), 0)


def health_cells(record: dict, files: dict[str, bytes]) -> list[str]:
    """[health, duplicates, label issues] of a dataset release: from the record's `health` (`cvrepro check` at
    release time) and its committed metrics/label_issues/label_issues.csv; blank where the release has neither."""
    from cvrepro.provenance.check import count_csv_rows

    h = record.get("health") or {}
    issues = h.get("label_issues")
    if issues is None and "label_issues" in files:
        issues = count_csv_rows(files["label_issues"].decode("utf-8", "replace"))
    if not h:
        return ["", "", f"<td class='n'>{e(issues) if issues is not None else ''}</td>"]
    state = "ok" if not (h.get("errors") or h.get("warnings")) else \
        f"{h.get('errors', 0)} errors, {h.get('warnings', 0)} warnings"
    cls = "down" if h.get("errors") else "muted" if state == "ok" else ""
    d = h.get("duplicates") or {}
    return [f"<span class='{cls}'>{e(state)}</span>", f"<td class='n'>{e(d.get('groups', ''))}</td>",
            f"<td class='n'>{e(issues) if issues is not None else ''}</td>"]


def trends(reg: dict) -> str:
    recs, models = reg["records"], reg["tags"]["model"]
    if not models:
        return "<p class='muted'>no model release yet</p>"
    key = headline(recs[models[-1]].get("metrics", {}))
    charts = []
    splits = [s for s in ("val", "test") if any((recs[m]["metrics"].get(s) or {}).get(key) is not None for m in models)]
    charts.append(line_chart(f"{key}, overall", models, {s: [(recs[m]["metrics"].get(s) or {}).get(key) for m in models]
                                                         for s in splits}))
    for split in splits:
        names: dict[str, None] = {}
        for m in models:
            for name, groups in slices(recs[m]["metrics"].get(split) or {}).items():
                names.setdefault(name)
        for name in names:
            values = {g: None for m in models for g in (slices(recs[m]["metrics"].get(split) or {}).get(name) or {})}
            series = {g: [((slices(recs[m]["metrics"].get(split) or {}).get(name) or {}).get(g) or {}).get(key)
                          for m in models] for g in values}
            charts.append(line_chart(f"{key} per {name} ({split})", models, series))
        per_class = {c: None for m in models for c in ((recs[m]["metrics"].get(split) or {}).get("per_class") or {})}
        pc_key = {"mIoU": "IoU", "accuracy": "recall"}.get(key, key)
        charts.append(line_chart(f"{pc_key} per class ({split})", models,
                                 {c: [(((recs[m]["metrics"].get(split) or {}).get("per_class") or {}).get(c) or {}).get(pc_key)
                                      for m in models] for c in per_class}))
    return "<div class='grid'>" + "".join(f"<div>{c}</div>" for c in charts if c) + "</div>"


def dataset_page(reg: dict, t: str) -> str:
    r, recs = reg["records"][t], reg["records"]
    s = r.get("stats", {})
    models = [m for m in reg["tags"]["model"] if recs[m].get("dataset_version") == t]
    body = [f"<h1>{e(t)}</h1>", f"<p>{e(r.get('task'))} dataset, {e(s.get('images'))} images, {e(s.get('objects'))} objects, "
            f"{len(r.get('class_map', {}))} classes. Released {e(r.get('created_utc', ''))} from commit "
            f"<code>{e(r.get('source_commit', ''))}</code>; snapshot <code>{e(r.get('snapshot_id', ''))}</code>.</p>",
            "<p>Previous: " + (link(r["previous"], 1) if r.get("previous") else "none (first release)")
            + ". Models trained on it: " + (" ".join(link(m, 1) for m in models) or "none") + ".</p>"]
    delta = (r.get("changelog") or {}).get("per_class_delta", {})
    body += ["<h2>Classes</h2>", table(["class", "objects", "change"],
                                       [[e(c), f"<td class='n'>{e(n)}</td>", f"{delta.get(c, 0):+d}" if r.get("previous") else "new"]
                                        for c, n in (s.get("per_class") or {}).items()])]
    split = r.get("split") or {}
    body += ["<h2>Split</h2>", f"<p>{e(split.get('method'))}, seed {e(split.get('seed'))}, ratios {e(split.get('ratios'))}, "
             f"counts {e(split.get('counts'))}; membership sha256 <code>{e(split.get('membership_sha256', ''))[:16]}</code></p>"]
    if r.get("changelog"):
        from cvrepro.dataset.diff import summary_lines

        c = r["changelog"]
        body += [f"<h2>Changes since {link(r['previous'], 1)}</h2>",
                 f"<p>{e(c.get('required_bump'))} change: {e(c.get('reason'))}</p>", markdown("\n".join(summary_lines(c)))]
        for kind in ("added", "removed", "modified"):
            paths = (c.get("images") or {}).get(kind) or []
            if paths:
                body.append(f"<p><b>{kind}</b> ({len(paths)}): " + e(", ".join(paths[:30])) + (" …" if len(paths) > 30 else "") + "</p>")
    if r.get("health"):
        from cvrepro.provenance.check import notes_lines

        body += ["<h2>Health</h2>", markdown("\n".join(notes_lines(r["health"])[3:]))]
    if r.get("notes"):
        body += ["<h2>Notes</h2>", f"<p>{e(r['notes'])}</p>"]
    return page(t, "".join(body), 1)


def model_page(reg: dict, t: str, pictures: dict[str, str]) -> str:
    r, recs, files = reg["records"][t], reg["records"], reg["files"].get(t, {})
    prev = recs.get(r.get("previous")) if r.get("previous") else None
    later = [m for m in reg["tags"]["model"] if recs[m].get("previous") == t]
    arch = r.get("architecture", {})
    body = [f"<h1>{e(t)}</h1>",
            f"<p>{e(arch.get('name'))} ({arch.get('parameters', 0):,} parameters) trained on {link(r['dataset_version'], 1)}; "
            f"config <code>{e(r.get('config_id'))}</code>; commit <code>{e(r.get('source_commit'))}</code>; "
            f"{e(r.get('bump'))} bump ({e(r.get('bump_reason'))}).</p>",
            "<p>Previous: " + (link(r["previous"], 1) if r.get("previous") else "none") + ". Next: "
            + (" ".join(link(m, 1) for m in later) or "none") + ".</p>"]
    metrics = {s: m for s, m in r.get("metrics", {}).items() if isinstance(m, dict)}
    old = (prev or {}).get("metrics") or {}
    keys = sorted({k for m in metrics.values() for k, v in m.items() if _num(v)})
    body += ["<h2>Metrics</h2>", f"<p class='muted'>In brackets: the change since {e(r['previous'])}.</p>" if prev else "",
             table(["split", *keys], [[e(s), *(delta_cell(m.get(k), (old.get(s) or {}).get(k)) for k in keys)]
                                      for s, m in metrics.items()])]
    for s, m in metrics.items():
        o = old.get(s) or {}
        if m.get("per_class"):
            ck = sorted({k for cm in m["per_class"].values() for k, v in cm.items() if _num(v)})
            body += [f"<h3>Per class ({e(s)})</h3>", table(["class", *ck], [[e(c), *(delta_cell(cm.get(k), ((o.get("per_class") or {}).get(c) or {}).get(k)) for k in ck)]
                                                                          for c, cm in m["per_class"].items()])]
        for name, groups in slices(m).items():
            gk = sorted({k for g in groups.values() for k, v in g.items() if _num(v)})
            body += [f"<h3>Per {e(name)} ({e(s)})</h3>", table([e(name), *gk], [[e(g), *(delta_cell(gm.get(k), ((o.get(name) or {}).get(g) or {}).get(k)) for k in gk)]
                                                                              for g, gm in groups.items()])]
    body.append("<h2>Pictures (val)</h2><div class='grid'>")
    if "predictions_val.png" in pictures:
        body.append(f"<div><h3>Predictions beside the ground truth</h3><img class='plot' alt='prediction grid of {e(t)}' "
                    f"src='../{pictures['predictions_val.png']}'></div>")
    if "pr_val.csv" in files:
        body.append(f"<div><h3>Precision-recall per class</h3>{pr_chart(files['pr_val.csv'].decode())}</div>")
    if "confusion_val.png" in pictures:  # classification, from the evaluate stage: counts drawn for people
        body.append(f"<div><h3>Confusion matrix</h3><img class='plot' alt='confusion matrix of {e(t)}' "
                    f"src='../{pictures['confusion_val.png']}'></div>")
    elif "confusion_val.csv" in files:  # releases made before the PNG existed
        body.append(f"<div>{confusion_table(files['confusion_val.csv'].decode())}</div>")
    if not ({"predictions_val.png", "pr_val.csv", "confusion_val.csv"} & set(files)):
        body.append("<p class='muted'>no pictures committed with this release (metrics/plots)</p>")
    body.append("</div>")
    export = r.get("export") or {}
    if export:
        p = export.get("parity", {})
        body += ["<h2>Export</h2>", f"<p>ONNX opset {e(export.get('opset'))}, batch {e(export.get('batch'))}; parity with "
                 f"PyTorch on {e(p.get('images'))} {e(p.get('split', 'val'))} images: <b>{'ok' if p.get('ok') else 'FAILED'}</b> "
                 + e(", ".join(f"{k} {v}" for k, v in p.items() if k not in ('ok', 'tolerance', 'images', 'split')))
                 + f" (tolerance {e(p.get('tolerance'))}).</p>",
                 table(["file", "sha256"], [[e(k), f"<code>{e(v)}</code>"] for k, v in (export.get("files") or {}).items()])]
    card = files.get("card") or files.get("notes")
    if card:
        body += ["<h2>Model card</h2>" if "card" in files else "<h2>Release notes</h2>", f"<div class='card'>{markdown(card.decode())}</div>"]
    return page(t, "".join(body), 1)


def build(root: Path, out: Path) -> dict:
    """Write the site to `out` (replaced as a whole); returns {pages, datasets, models, out}."""
    root, out = Path(root), Path(out).resolve()
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise CvreproError(f"{out}: exists and is not a cvrepro report (no {MARKER}); give --out an empty or new "
                           "folder, it is replaced as a whole")
    reg = load(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".report-", dir=out.parent))
    try:
        (tmp / "datasets").mkdir()
        (tmp / "models").mkdir()
        (tmp / "pictures").mkdir()
        (tmp / "style.css").write_text(CSS, encoding="utf-8")
        (tmp / MARKER).write_text("written by `cvrepro report`; the folder is replaced on each run\n", encoding="utf-8")
        (tmp / "index.html").write_text(index_page(reg), encoding="utf-8")
        for t in reg["tags"]["dataset"]:
            (tmp / "datasets" / f"{t}.html").write_text(dataset_page(reg, t), encoding="utf-8")
        for t in reg["tags"]["model"]:
            pictures = {}
            for name in PICTURES:
                if name in reg["files"][t]:
                    rel = f"pictures/{t}-{name}"
                    (tmp / rel).write_bytes(reg["files"][t][name])
                    pictures[name] = rel
            (tmp / "models" / f"{t}.html").write_text(model_page(reg, t, pictures), encoding="utf-8")
        old = out.with_name(out.name + ".old")
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": str(out), "datasets": len(reg["tags"]["dataset"]), "models": len(reg["tags"]["model"]),
            "pages": 1 + len(reg["tags"]["dataset"]) + len(reg["tags"]["model"])}
