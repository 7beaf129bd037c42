"""``harness model``: the demo SavedModels (export one, list them)."""

from __future__ import annotations

from harness.config import DEMO_MODELS


def register(sub) -> None:
    model = sub.add_parser("model", help="demo SavedModels")
    msub = model.add_subparsers(dest="model_command", required=True)
    exp = msub.add_parser("export", help="export a demo model to DIR/<version>/")
    exp.add_argument("name", help=" or ".join([", ".join(DEMO_MODELS[:-1]), DEMO_MODELS[-1]]))
    exp.add_argument("--output", required=True, help="model base directory")
    exp.add_argument("--version", type=int, default=1)
    exp.add_argument("--overwrite", action="store_true")
    exp.set_defaults(func=cmd_export)
    lst = msub.add_parser("list", help="list the demo models")
    lst.set_defaults(func=cmd_list)
    pay = msub.add_parser(
        "payload",
        help="write example requests for a demo model as a TF Serving REST request body "
        "(what --payload takes)",
    )
    pay.add_argument("name", help=" or ".join([", ".join(DEMO_MODELS[:-1]), DEMO_MODELS[-1]]))
    pay.add_argument("--output", required=True, help="the JSON file to write")
    pay.add_argument("--rows", type=int, default=8, help="example rows (default: 8)")
    pay.add_argument("--seed", type=int, default=0)
    pay.set_defaults(func=cmd_payload)


def cmd_export(args) -> int:
    from harness.models.export import export

    path = export(args.name, args.output, args.version, overwrite=args.overwrite)
    print(path)
    return 0


def cmd_list(args) -> int:
    from harness.models.catalog import MODELS

    for m in MODELS.values():
        shape = ",".join(["N", *(str(d) for d in m.input_shape)])
        kind = "" if m.input_dtype == "float32" else f" {m.input_dtype}"
        print(f"{m.name:14} {m.input_name}[{shape}]{kind} -> {m.output_name}   {m.description}")
    return 0


def cmd_payload(args) -> int:
    import json

    from harness import atomic
    from harness.models.export import sample_request

    doc = sample_request(args.name, args.rows, args.seed)
    atomic.write_text(args.output, json.dumps(doc, separators=(",", ":")) + "\n")
    print(args.output)
    return 0
