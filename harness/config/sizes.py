"""Request size mixes: ``"1:50,4:30,16:20"`` (rows:weight) or ``"8"``; input row shapes:
``"image=224,224,3"``.

A setting's own syntax, so it lives with the settings: the validator, the load generator's
payloads, the simulator and the report all read a mix through this one parser.
"""

from __future__ import annotations

from harness.errors import ConfigError


def parse_size_mix(text: str) -> list[tuple[int, float]]:
    """``"1:50,4:30,16:20"`` (size:weight) or ``"8"`` -> [(size, probability), ...]."""
    mix = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        size_s, _, weight_s = part.partition(":")
        try:
            size = int(size_s)
            weight = float(weight_s) if weight_s else 1.0
        except ValueError:
            raise ConfigError(
                f"request size mix {text!r}: {part!r} is not size or size:weight",
                hint="write it like 1:50,4:30,16:20",
            ) from None
        if size < 1 or weight <= 0:
            raise ConfigError(f"request size mix {text!r}: sizes must be >= 1 and weights > 0")
        mix.append((size, weight))
    if not mix:
        raise ConfigError("request size mix is empty", hint="write it like 1 or 1:50,4:30,16:20")
    total = sum(w for _, w in mix)
    return [(s, w / total) for s, w in mix]


def parse_input_shapes(items) -> dict[str, tuple[int, ...]]:
    """``["image=224,224,3", "mask=8"]`` -> {"image": (224, 224, 3), "mask": (8,)}: the shape
    of one row (the batch dimension left out). ``"x="`` is a row of one value (a scalar)."""
    out: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, sep, dims = str(item).replace(" ", "").partition("=")
        try:
            shape = tuple(int(d) for d in dims.split(",")) if dims else ()
        except ValueError:
            shape = None
        if not sep or not name or shape is None or any(d < 1 for d in shape):
            raise ConfigError(
                f"input shape {item!r} is not NAME=D1,D2,...",
                hint="the row shape without the batch dimension, positive sizes, e.g. image=224,224,3",
            )
        if name in out:
            raise ConfigError(f"input shape for {name!r} is given twice")
        out[name] = shape
    return out


def parse_traffic(text: str) -> list[tuple[str, float]]:
    """``"ranker:70,mlp:30"`` (model:weight) -> [(model, share), ...], shares summing to 1;
    a bare name weighs 1. The order is kept: it numbers the models in the request records."""
    split: list[tuple[str, float]] = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        name, _, weight_s = part.rpartition(":") if ":" in part else (part, "", "1")
        try:
            weight = float(weight_s)
        except ValueError:
            weight = float("nan")
        if not name or not weight > 0 or weight == float("inf"):
            raise ConfigError(
                f"traffic split {text!r}: {part!r} is not model:weight with a weight > 0",
                hint="write it like ranker:70,mlp:30",
            )
        if name in (n for n, _ in split):
            raise ConfigError(f"traffic split {text!r}: model {name!r} is given twice")
        split.append((name, weight))
    if not split:
        raise ConfigError("traffic split is empty", hint="write it like ranker:70,mlp:30")
    total = sum(w for _, w in split)
    return [(n, w / total) for n, w in split]
