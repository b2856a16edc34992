"""Commands on versions: release, the registry (ls), diff, preflight, reproduce, rollback."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cvrepro.core.paths import ROLLBACKS


def cmd_release(args: argparse.Namespace) -> int:
    from cvrepro.cli.guard import changing
    from cvrepro.provenance import registry, release

    fn = release.release_dataset if args.kind == "dataset" else release.release_model
    with changing(Path(args.root), f"release {args.kind}") as repairs:
        finished = [r["tag"] for r in repairs if r["action"] == "completed" and r["tag"]
                    and r["tag"].startswith(registry.KINDS[args.kind])]
        if finished:  # the rerun of a killed release: completing it was the job
            record = registry.record_at(Path(args.root), finished[-1])
        else:
            record = fn(Path(args.root), version=args.version, level=args.bump, notes=args.notes or "",
                        remote=args.remote)
    if args.json:
        print(json.dumps(record, sort_keys=True, indent=2))
    else:
        print(f"released {record['version']} ({record['bump']}); `git push --follow-tags` to share it")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from cvrepro.cli.guard import repair_if_idle
    from cvrepro.provenance import registry

    repair_if_idle(Path(args.root))  # a killed release is settled first: the list then agrees with the tags
    rows = registry.entries(Path(args.root))
    print(json.dumps(rows, sort_keys=True, indent=2) if args.json else registry.format_table(rows))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from cvrepro import tasks
    from cvrepro.core.fileio import CvreproError
    from cvrepro.dataset import diff as datadiff

    root = Path(args.root)
    if args.a.startswith("v") and args.b.startswith("v"):
        from cvrepro.provenance.triage import format_triage, triage

        result = triage(root, args.a, args.b)
        print(json.dumps(result, sort_keys=True, indent=2) if args.json else format_triage(result))
        return 0
    if not (args.a.startswith("DS-") or args.a == "workspace") or not (args.b.startswith("DS-") or args.b == "workspace"):
        raise CvreproError(f"diff compares two dataset versions (DS-x.y.z, or 'workspace') or two model releases "
                           f"(vX.Y.Z); got {args.a} and {args.b}")
    diff = datadiff.dataset_diff(datadiff.load_state(root, args.a), datadiff.load_state(root, args.b),
                                 tasks.of_manifest)
    print(json.dumps(diff, sort_keys=True, indent=2) if args.json else datadiff.format_diff(diff))
    return 0


def cmd_preflight(args: argparse.Namespace) -> int:
    from cvrepro.provenance.preflight import format_rows, preflight

    rows = preflight(Path(args.root), version=args.version)
    print(json.dumps(rows, indent=2) if args.json else format_rows(rows))
    return 0 if all(r["ok"] for r in rows) else 1


def cmd_reproduce(args: argparse.Namespace) -> int:
    from cvrepro.provenance.reproduce import format_verdict, reproduce

    verdict = reproduce(Path(args.root), args.version, remote=args.remote, keep=args.keep,
                        progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(json.dumps(verdict, sort_keys=True, indent=2) if args.json else format_verdict(verdict))
    return 0 if verdict["ok"] else 1


def cmd_rollback(args: argparse.Namespace) -> int:
    from cvrepro.cli.guard import changing
    from cvrepro.provenance.rollback import rollback

    with changing(Path(args.root), f"rollback {args.version}"):
        entry = rollback(Path(args.root), args.version, reason=args.reason or "", remote=args.remote)
    if args.json:
        print(json.dumps(entry, sort_keys=True, indent=2))
        return 0
    print(f"models/ now holds {entry['to_version']} (weights {entry['to_weights_sha256'][:16]}, "
          f"were {(entry['from_weights_sha256'] or 'absent')[:16]}); entry added to {ROLLBACKS}\n"
          f"commit it: git add {ROLLBACKS} && git commit -m 'Roll back to {entry['to_version']}'\n"
          "dvc.lock is unchanged, so `dvc status` shows the train outputs as modified until you choose: "
          "`dvc checkout --force train` undoes the rollback, `dvc repro` retrains over it (see docs/safety.md)")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from cvrepro.cli.guard import changing

    with changing(Path(args.root), "doctor") as repairs:
        pass
    if args.json:
        print(json.dumps(repairs, sort_keys=True, indent=2))
    elif not repairs:
        print("nothing to repair: no interrupted release or import")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from cvrepro.provenance.report import build

    done = build(Path(args.root), Path(args.out) if args.out else Path(args.root) / "report")
    print(f"{done['out']}/index.html: {done['datasets']} dataset and {done['models']} model versions, "
          f"{done['pages']} pages; open it in a browser (no server needed)")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="finish or roll back a release or import that was killed part way "
                                      "(every command that changes the repository does this first)")
    p.add_argument("--root", default=".")
    p.add_argument("--json", action="store_true", help="print the repairs made as JSON")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("release", help="release the dataset (DS-x.y.z) or the trained model (vX.Y.Z): "
                       "record, commit, annotated tag, dvc push")
    p.add_argument("kind", choices=["dataset", "model"])
    p.add_argument("--version", help="the version to make (default: computed from what changed)")
    p.add_argument("--bump", choices=["major", "minor", "patch"], help="bump the newest version by this level")
    p.add_argument("--notes", help="release notes; required for a larger bump than the change needs")
    p.add_argument("--remote", help="DVC remote to push to (default: the default remote)")
    p.add_argument("--root", default=".")
    p.add_argument("--json", action="store_true", help="print the release record")
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("preflight", help="check that code, data and config are pinned (exit 1 if not)")
    p.add_argument("--version", help="the model version to be produced, checked to be free")
    p.add_argument("--root", default=".")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_preflight)

    p = sub.add_parser("ls", help="the registry: every dataset and model version with its facts")
    p.add_argument("--root", default=".")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("report", help="the registry as a static HTML site (every version, lineage, metric trends, "
                                      "diffs, pictures); opens from disk")
    p.add_argument("--out", help="the folder to write (replaced as a whole; default: report/ in --root)")
    p.add_argument("--root", default=".")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("diff", help="DS-A DS-B: images, labels, classes, splits; vA vB: code, data, params "
                       "and metrics (regressions first)")
    p.add_argument("a", help="DS-x.y.z or vX.Y.Z")
    p.add_argument("b", nargs="?", default="workspace", help="DS-x.y.z or 'workspace' (default), or vX.Y.Z")
    p.add_argument("--root", default=".")
    p.add_argument("--json", action="store_true", help="the full diff, every path")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("reproduce", help="rebuild a model release from the DVC remote in a fresh worktree and "
                                         "check it matches the release record (see docs/safety.md)")
    p.add_argument("version", help="the model release, vX.Y.Z")
    p.add_argument("--remote", help="DVC remote to pull from (default: the default remote)")
    p.add_argument("--keep", action="store_true", help="keep the temporary worktree for inspection")
    p.add_argument("--root", default=".")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("rollback", help="restore a model release's verified files into models/ and log it in "
                                        f"{ROLLBACKS} (no git or tag changes; see docs/safety.md)")
    p.add_argument("version", help="the model release to go back to, vX.Y.Z")
    p.add_argument("--reason", help="why: kept in the rollback entry")
    p.add_argument("--remote", help="DVC remote to fetch from when the cache lacks a file (default: the default remote)")
    p.add_argument("--root", default=".")
    p.add_argument("--json", action="store_true", help="print the rollback entry as JSON")
    p.set_defaults(func=cmd_rollback)
