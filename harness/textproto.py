"""A small reader and writer for protobuf text format.

TF Serving's batching parameters, monitoring config and model config files are text protos. We
read them without protobuf descriptors (so a load machine or the tuner needs no TensorFlow): the
reader returns nested dicts whose values are lists, because any text-proto field may repeat, and
the callers check field names against what TF Serving accepts.
"""

from __future__ import annotations

import re

from harness.errors import ConfigError

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<punct>[{}<>:;,\[\]])
  | (?P<word>[A-Za-z_][A-Za-z0-9_.]*|[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)[fF]?|[-+]?inf(?:inity)?|nan)
    """,
    re.VERBOSE,
)

Message = dict[str, list]


def _tokens(text: str, source: str) -> list[tuple[str, str, int]]:
    out = []
    pos = 0
    line = 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ConfigError(
                f"{source}:{line}: cannot parse text proto near {text[pos : pos + 20]!r}",
                hint="fix the syntax; see TF Serving's batching guide for the format",
            )
        kind = m.lastgroup
        value = m.group()
        if kind != "ws":
            out.append((kind, value, line))
        line += value.count("\n")
        pos = m.end()
    return out


def _unquote(s: str) -> str:
    body = s[1:-1]
    return bytes(body, "utf-8").decode("unicode_escape") if "\\" in body else body


def parse(text: str, source: str = "<text>") -> Message:
    """Parse text-format protobuf into ``{field: [values...]}`` (nested for messages)."""
    toks = _tokens(text, source)
    pos = 0

    def parse_message(end: str | None) -> Message:
        nonlocal pos
        msg: Message = {}
        while pos < len(toks):
            kind, value, line = toks[pos]
            if end is not None and kind == "punct" and value == end:
                pos += 1
                return msg
            if kind != "word":
                raise ConfigError(f"{source}:{line}: expected a field name, found {value!r}")
            name = value
            pos += 1
            if pos >= len(toks):
                raise ConfigError(f"{source}:{line}: field {name!r} has no value")
            kind, value, line = toks[pos]
            if kind == "punct" and value == ":":
                pos += 1
                if pos >= len(toks):
                    raise ConfigError(f"{source}:{line}: field {name!r} has no value")
                kind, value, line = toks[pos]
            if kind == "punct" and value in ("{", "<"):
                pos += 1
                msg.setdefault(name, []).append(parse_message("}" if value == "{" else ">"))
            elif kind == "punct" and value == "[":
                pos += 1
                while pos < len(toks) and toks[pos][1] != "]":
                    msg.setdefault(name, []).append(_scalar(toks[pos], source))
                    pos += 1
                    if pos < len(toks) and toks[pos][1] == ",":
                        pos += 1
                pos += 1
            else:
                msg.setdefault(name, []).append(_scalar(toks[pos], source))
                pos += 1
            if pos < len(toks) and toks[pos][1] in (",", ";"):
                pos += 1
        if end is not None:
            raise ConfigError(f"{source}: unexpected end of file, missing {end!r}")
        return msg

    return parse_message(None)


def _scalar(tok: tuple[str, str, int], source: str):
    kind, value, line = tok
    if kind == "string":
        return _unquote(value)
    if kind != "word":
        raise ConfigError(f"{source}:{line}: expected a value, found {value!r}")
    low = value.lower()
    if low in ("true", "t"):
        return True
    if low in ("false", "f"):
        return False
    try:
        return (
            int(value, 0)
            if re.fullmatch(r"[-+]?(0x[0-9a-fA-F]+|\d+)", value)
            else float(value.rstrip("fF"))
        )
    except ValueError:
        return value  # an enum name


def check_fields(msg: Message, allowed: set[str], where: str, source: str) -> None:
    """Reject unknown fields the way protobuf's text parser does, naming the field and file."""
    for name in msg:
        if name not in allowed:
            raise ConfigError(
                f"{source}: message type {where!r} has no field named {name!r}",
                hint=f"allowed fields: {', '.join(sorted(allowed))}",
            )


def single(msg: Message, name: str, source: str):
    """The one value of a non-repeated field, or None when absent."""
    values = msg.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ConfigError(
            f"{source}: field {name!r} is given {len(values)} times but may appear once"
        )
    return values[0]
