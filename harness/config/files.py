"""Experiment files: TOML -> the settings types (every value converted and checked) and back.

Unknown keys, wrong types and impossible ranges are errors that name the key and the file.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import tomllib
import types
import typing
from pathlib import Path

from harness.config.settings import Experiment, Range, SearchConfig
from harness.config.validate import show
from harness.errors import ConfigError

# The experiments shipped with the harness, inside the package (a checkout's experiments/*.toml
# are links to them): ``harness tune --experiment open_loop`` finds open_loop.toml from any
# working directory, installed or not.
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "experiments"


def resolve_experiment(name: str | Path) -> Path:
    """An experiment file: ``name`` as a path when it exists, else the bundled experiment of
    that file name (``default``, ``default.toml`` or ``experiments/default.toml``)."""
    path = Path(name)
    if path.is_file():
        return path
    if not path.is_absolute():
        stem = path.name if path.suffix == ".toml" else path.name + ".toml"
        bundled = BUNDLED_DIR / stem
        if bundled.is_file():
            return bundled
    if path.exists():
        raise ConfigError(f"experiment {path} is not a file")
    names = ", ".join(sorted(p.stem for p in BUNDLED_DIR.glob("*.toml")))
    raise ConfigError(
        f"no experiment file {path}",
        hint=f"give a path to a TOML file, or a bundled experiment: {names or 'none found'}",
    )


def load_experiment(name: str | Path, overrides: typing.Sequence[str] = ()) -> Experiment:
    """``resolve_experiment`` then ``load``: what every command's ``--experiment`` does."""
    return load(resolve_experiment(name), list(overrides))


def load(path: str | Path, overrides: typing.Sequence[str] = ()) -> Experiment:
    """Read an experiment file; ``overrides`` are ``section.key=value`` (TOML values)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read experiment file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path}: invalid TOML: {first}") from None
    for item in overrides:
        apply_override(data, item, str(path))
    return from_dict(data, str(path))


def from_dict(data: dict, source: str = "<dict>") -> Experiment:
    data = _per_model_flag(data)
    exp = _build(Experiment, data, "", source)
    if exp.models and "model" not in data:  # [[models]]: the first is the model too
        exp = dataclasses.replace(exp, model=exp.models[0])
    return dataclasses.replace(exp, source=source).check()


def _per_model_flag(data: dict) -> dict:
    """``search.per_model_batching = true``: every served model; false: none."""
    search = data.get("search")
    if not isinstance(search, dict) or not isinstance(search.get("per_model_batching"), bool):
        return data
    names = []
    if search["per_model_batching"]:
        models = data.get("models") or [data.get("model") or {}]
        for m in models if isinstance(models, list) else []:
            if isinstance(m, dict):
                path = str(m.get("path", "")).rstrip("/")
                names.append(m.get("name") or m.get("demo") or Path(path).name)
    return {**data, "search": {**search, "per_model_batching": names}}


def apply_override(data: dict, item: str, src: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or "." not in key:
        raise ConfigError(f"override {item!r} must look like section.key=value, e.g. load.users=32")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word: take it as a string
    *parents, last = key.strip().split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{src}: override {item!r}: {p} is not a table")
    node[last] = value


# -- reading ------------------------------------------------------------------------------------


def _build(cls, data, where: str, src: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{src}: [{where}] must be a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)} - {"source"}
    values = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(
                f"{src}: unknown key {where + '.' if where else ''}{key}",
                hint=f"known keys in [{where or 'top level'}]: {', '.join(sorted(fields))}",
            )
        values[key] = _convert(hints[key], value, f"{where}.{key}" if where else key, src)
    return cls(**values)


def _convert(hint, value, key: str, src: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Range:
        if isinstance(value, list):
            value = {"choices": value}
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = {"choices": [value]}
        return _build(Range, value, key, src)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, src)
    if isinstance(hint, type) and issubclass(hint, enum.StrEnum):
        # the member when the string is one; any other string is left for the validator,
        # whose message lists the allowed values
        value = _convert(str, value, key, src)
        return hint(value) if value in {m.value for m in hint} else value
    if origin is tuple and args and dataclasses.is_dataclass(args[0]):  # [[models]]
        if not isinstance(value, list):
            raise ConfigError(f"{src}: {key} must be a list of tables ([[{key}]]), got {show(value)}")
        return tuple(_build(args[0], v, f"{key}[{i}]", src) for i, v in enumerate(value))
    if origin is tuple or hint is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{src}: {key} must be a list, got {show(value)}")
        if args and args[0] is str and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{src}: {key} must be a list of strings, got {show(value)}")
        return tuple(value)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        if int in inner and isinstance(value, int) and not isinstance(value, bool):
            return value  # keep whole numbers whole where a field takes either
        return _convert(inner[0], value, key, src)
    return _scalar(hint, value, key, src)


def _scalar(hint, value, key: str, src: str):
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{src}: {key} must be true or false, got {show(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{src}: {key} must be an integer, got {show(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{src}: {key} must be a number, got {show(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{src}: {key} must be a finite number, got {value}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{src}: {key} must be a string, got {show(value)}")
        return value
    return value


# -- writing ------------------------------------------------------------------------------------


def to_toml(exp: Experiment) -> str:
    """The experiment as TOML (what a study folder keeps beside its results)."""
    lines = []
    for section in ("model", "server", "load", "slo", "study"):
        lines.append(f"[{section}]")
        for k, v in dataclasses.asdict(getattr(exp, section)).items():
            if v is None:
                continue
            lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    for m in exp.models:
        lines.append("[[models]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in dataclasses.asdict(m).items() if v is not None]
        lines.append("")
    lines.append("[search]")
    for f in dataclasses.fields(SearchConfig):
        v = getattr(exp.search, f.name)
        if isinstance(v, Range):
            parts = [
                f"{k} = {_toml_value(x)}"
                for k, x in dataclasses.asdict(v).items()
                if not (x is None or x is False or (isinstance(x, tuple) and not x))
            ]
            lines.append(f"{f.name} = {{ {', '.join(parts)} }}")
        else:
            lines.append(f"{f.name} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
