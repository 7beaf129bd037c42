"""``harness report``: report.md, report.html and plots from a study folder's files."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("report", help="draw report.md, report.html and plots from a study folder")
    p.add_argument("study_dir", help="a study folder, e.g. results/ranker-grpc")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from harness.report.study import build

    paths = build(args.study_dir)
    print(paths["html"])
    print(paths["markdown"])
    return 0
