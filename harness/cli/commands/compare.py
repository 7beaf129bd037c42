"""``harness compare``: studies side by side (REST against gRPC, two images, two models)."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("compare", help="studies side by side (REST vs gRPC, two images, ...)")
    p.add_argument("study_dirs", nargs="+", help="two or more study folders")
    p.add_argument(
        "--out", help="output folder (default: results/compare-A-vs-B beside the first study)"
    )
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    from harness.report.compare import build

    out = args.out or str(
        Path(args.study_dirs[0]).parent
        / ("compare-" + "-vs-".join(Path(d).name for d in args.study_dirs))
    )
    paths = build(args.study_dirs, out)
    print(paths["html"])
    print(paths["markdown"])
    return 0
