"""`cvrepro label-issues`: a ranked list of likely label mistakes (the `label_issues` stage of dvc.yaml)."""

from __future__ import annotations

import argparse
import json


def cmd_label_issues(args: argparse.Namespace) -> int:
    from cvrepro.config.typed import load, override
    from cvrepro.learning.devices import pin_cpu_isa

    cfg = load()
    pin_cpu_isa(cfg.train)  # before torch loads, as the stages do
    from cvrepro.learning.label_issues import CSV_NAME, OUT_DIR, SHEET_NAME, run, settings

    values = {f"label_issues.{k}": v for k, v in (("mode", args.mode), ("k", args.k), ("epochs", args.epochs))
              if v is not None}
    if values:
        settings(cfg)  # a params.yaml without the label_issues group: its own error, before an override
        cfg = override(cfg, values)  # checked by the schema like params.yaml (--k 1 is refused, naming the key)
    summary = run(cfg)
    if args.json:
        print(json.dumps(summary, sort_keys=True, indent=2))
    else:
        reasons = ", ".join(f"{n} {r}" for r, n in summary["by_reason"].items()) or "none"
        print(f"{summary['issues']} likely label issues ({reasons}) from {summary['mode']} predictions on "
              f"{', '.join(summary['splits'])}")
        print(f"wrote {OUT_DIR / CSV_NAME} (copy it out, delete the rows you reject, then `cvrepro labels apply` the copy) "
              f"and {OUT_DIR / SHEET_NAME}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    from cvrepro.config.params import LABEL_ISSUE_MODES

    p = sub.add_parser("label-issues", help="rank likely label mistakes from out-of-sample predictions "
                                            "(docs/label-issues.md)",
                       description="Writes metrics/label_issues/label_issues.csv (the columns of `cvrepro labels "
                                   "apply`, plus score and reason), a picture sheet and a summary. Settings: "
                                   "label_issues in params.yaml (conf/label_issues/).")
    p.add_argument("--mode", choices=LABEL_ISSUE_MODES, help="override label_issues.mode for this run "
                                                                "(the dvc stage: -S label_issues=kfold)")
    p.add_argument("--k", type=int, help="override label_issues.k (kfold)")
    p.add_argument("--epochs", type=int, help="override label_issues.epochs (kfold)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_label_issues)
