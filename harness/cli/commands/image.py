"""``harness image``: a local image of the reference server; TF Serving compiled for this CPU."""

from __future__ import annotations

from harness.config import ServerConfig


def register(sub) -> None:
    image = sub.add_parser("image", help="build server images")
    isub = image.add_subparsers(dest="image_command", required=True)
    ref = isub.add_parser(
        "build-reference",
        help="an image running the reference server from bind-mounted host paths (no registry)",
    )
    # the image the docker backend runs unless the experiment names another
    ref.add_argument("--tag", default=ServerConfig().image)
    ref.set_defaults(func=cmd_reference)
    opt = isub.add_parser(
        "build-optimized", help="TF Serving compiled for this CPU (two-stage build)"
    )
    opt.add_argument(
        "--source", required=True, help="a checkout of the tensorflow/serving repository"
    )
    opt.add_argument("--tag", default="tfs-harness/serving-optimized:latest")
    opt.add_argument("--devel-tag", default="tfs-harness/serving-optimized-devel:latest")
    opt.add_argument(
        "--build-options",
        default="--copt=-mavx2 --copt=-mfma",
        help="TF_SERVING_BUILD_OPTIONS, e.g. '--config=nativeopt'",
    )
    opt.add_argument("--dry-run", action="store_true", help="print the docker commands only")
    opt.set_defaults(func=cmd_optimized)


def cmd_reference(args) -> int:
    from harness.servers.docker import build_reference_image

    image_id = build_reference_image(tag=args.tag)
    print(f"{args.tag} {image_id}")
    return 0


def cmd_optimized(args) -> int:
    from pathlib import Path

    from harness.servers.images import OptimizedBuild, build_optimized

    build = OptimizedBuild(
        source=Path(args.source),
        tag=args.tag,
        devel_tag=args.devel_tag,
        build_options=args.build_options,
    )
    print(build_optimized(build, dry_run=args.dry_run))
    return 0
