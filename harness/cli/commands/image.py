"""``harness image``: a local image of the reference server; TF Serving compiled for this CPU."""

from __future__ import annotations

from harness.config import ServerConfig


def register(sub) -> None:
    image = sub.add_parser("image", help="build server images")
    isub = image.add_subparsers(dest="image_command", required=True)
    ref = isub.add_parser(
        "build-reference",
        help="the test image: the reference server built to tensorflow/serving's image contract, "
        "from files on this machine (no registry, no base image)",
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
    from harness.servers.reference_image import build_reference_image

    built = build_reference_image(tag=args.tag)
    how = "unchanged, already built" if built.cached else "built"
    print(
        f"{built.tag} {built.image_id} ({built.size_bytes / 1e6:.0f} MB, {how} in "
        f"{built.seconds:.1f} s)"
    )
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
