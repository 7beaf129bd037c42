"""Example requests as users already have them, read into named arrays of rows.

Three forms (docs/payloads.md):

- a TF Serving REST request body: row form (``{"instances": [...]}``: a list of objects naming
  the inputs, or of bare values for a single-input signature) or columnar form
  (``{"inputs": {...}}``, or a bare value for a single input), strings as JSON strings or
  ``{"b64": "..."}`` objects, an optional ``signature_name``;
- a directory: every ``*.json`` in it, each such a body;
- an ``.npz`` of named arrays (first dimension = rows; strings as numpy bytes or str arrays).

Reading needs numpy only. The values stay untyped here (numbers as numpy makes them, strings as
``bytes`` objects): the signature decides their dtype (``payloads.fit``). An input given without
a name (the bare forms) is keyed ``UNNAMED`` until the signature names it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np

from harness.errors import ConfigError

UNNAMED = ""  # the only input of a single-input signature, in the bare forms
FORMS = (
    'a TF Serving REST request body ({"instances": [...]} or {"inputs": ...}), a directory of '
    "them, or an .npz of named arrays"
)


@dataclasses.dataclass(frozen=True)
class Part:
    """One file's inputs: alias (or UNNAMED) -> values with the rows along the first axis."""

    source: str
    inputs: dict[str, np.ndarray]
    signature_name: str = ""


def read(path: str | Path) -> list[Part]:
    """The parts of a payload: one per file (a directory gives one per ``*.json``)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.json") if p.is_file())
        if not files:
            raise ConfigError(f"payload directory {path} holds no *.json file", hint=FORMS)
        return [read_json(p) for p in files]
    if not path.exists():
        raise ConfigError(f"payload {path} does not exist", hint=FORMS)
    if path.suffix == ".npz":
        return [read_npz(path)]
    return [read_json(path)]


def read_json(path: Path) -> Part:
    src = str(path)
    try:
        doc = json.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read payload {src}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"payload {src} is not JSON: {exc}", hint=FORMS) from None
    except RecursionError:
        raise ConfigError(f"payload {src} is nested too deeply") from None
    return from_body(doc, src)


def from_body(doc, src: str = "<body>") -> Part:
    """A REST request body (already parsed) as one part."""
    if not isinstance(doc, dict):
        raise ConfigError(
            f"payload {src} is a JSON {_kind(doc)}, not a request body object", hint=FORMS
        )
    sig = doc.get("signature_name", "")
    if not isinstance(sig, str):
        raise ConfigError(f"payload {src}: signature_name must be a string, got {_kind(sig)}")
    if "instances" in doc and "inputs" in doc:
        raise ConfigError(
            f'payload {src} has both "instances" and "inputs"',
            hint="a TF Serving request body has one of them: instances (rows) or inputs (columns)",
        )
    if "instances" in doc:
        inputs = _rows(doc["instances"], src)
    elif "inputs" in doc:
        inputs = _columns(doc["inputs"], src)
    else:
        raise ConfigError(f'payload {src} has no "instances" or "inputs" key', hint=FORMS)
    _same_rows(inputs, src)
    return Part(src, inputs, sig)


def read_npz(path: Path) -> Part:
    src = str(path)
    out = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for name in npz.files:
                out[name] = _npz_array(npz[name], name, src)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise ConfigError(
                f"payload {src} holds an object array, which is read only with pickle "
                "(refused: it can run code)",
                hint="save strings as a bytes array (dtype 'S', e.g. np.array(list_of_bytes)) "
                "or a str array",
            ) from None
        raise ConfigError(f"payload {src} is not a readable .npz: {exc}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ConfigError(f"payload {src} is not a readable .npz: {exc}") from None
    if not out:
        raise ConfigError(f"payload {src} holds no arrays", hint="one array per input, named as it")
    _same_rows(out, src)
    return Part(src, out)


def _npz_array(arr: np.ndarray, name: str, src: str) -> np.ndarray:
    if arr.ndim == 0:
        raise ConfigError(
            f"payload {src}: array {name!r} is a scalar: the first dimension holds the rows",
            hint="give it the shape [rows, ...]",
        )
    if arr.dtype.kind == "S":  # numpy strips trailing NUL bytes of fixed-width bytes
        return _objects([bytes(v) for v in arr.ravel()], arr.shape)
    if arr.dtype.kind == "U":
        return _objects([str(v).encode() for v in arr.ravel()], arr.shape)
    if arr.dtype.kind not in "biuf":
        raise ConfigError(
            f"payload {src}: array {name!r} has numpy dtype {arr.dtype}, which no TF Serving "
            "input takes"
        )
    return arr


# -- the two JSON forms ---------------------------------------------------------------------------


def _is_b64(v) -> bool:
    return isinstance(v, dict) and len(v) == 1 and "b64" in v


def _rows(instances, src: str) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise ConfigError(f'payload {src}: "instances" must be a list (one item per row)')
    if not instances:
        raise ConfigError(f'payload {src}: "instances" is empty', hint="give at least one row")
    named = [isinstance(i, dict) and not _is_b64(i) for i in instances]
    if not any(named):
        return {UNNAMED: _array(instances, src, "instances")}
    if not all(named):
        raise ConfigError(
            f'payload {src}: "instances" mixes objects naming the inputs with bare values',
            hint="every row is an object {input: value, ...}, or (one input) every row a value",
        )
    keys = list(instances[0])
    for i, inst in enumerate(instances):
        if set(inst) != set(keys):
            raise ConfigError(
                f"payload {src}: instance {i} names inputs {sorted(inst)}, instance 0 names "
                f"{sorted(keys)}",
                hint="every row gives the same inputs (columnar form for inputs of other sizes)",
            )
    return {k: _array([inst[k] for inst in instances], src, f"input {k!r}") for k in keys}


def _columns(inputs, src: str) -> dict[str, np.ndarray]:
    if isinstance(inputs, dict) and not _is_b64(inputs):
        if not inputs:
            raise ConfigError(f'payload {src}: "inputs" is an empty object')
        out = {k: _array(v, src, f"input {k!r}") for k, v in inputs.items()}
    else:
        out = {UNNAMED: _array(inputs, src, "inputs")}
    for k, arr in out.items():
        if arr.ndim == 0:
            raise ConfigError(
                f"payload {src}: {'inputs' if k == UNNAMED else f'input {k!r}'} is a single "
                "value: the load generator draws rows along the first dimension",
                hint="give a list of rows",
            )
    return out


def _same_rows(inputs: dict[str, np.ndarray], src: str) -> None:
    counts = {k: a.shape[0] for k, a in inputs.items()}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{k or 'inputs'}: {n}" for k, n in counts.items())
        raise ConfigError(
            f"payload {src}: the inputs have different numbers of rows ({listed})",
            hint="the load generator draws whole rows, so every input needs the same first "
            "dimension",
        )
    if 0 in counts.values():
        raise ConfigError(f"payload {src} has no rows", hint="give at least one row")


# -- JSON values -> arrays ------------------------------------------------------------------------


def _array(value, src: str, what: str) -> np.ndarray:
    """Nested lists -> an array: numbers through numpy (fast), strings and ``{"b64": ...}``
    objects as ``bytes`` in an object array, ragged nesting refused."""
    try:
        arr = np.array(value)
    except (ValueError, TypeError):
        arr = None
    if arr is not None and arr.dtype.kind in "biuf":
        return arr
    decoded = _decode(value, src, what)
    shape = _shape(decoded, src, what)
    leaves = list(_leaves(decoded, len(shape)))
    kinds = {type(v) for v in leaves}
    if kinds and kinds != {bytes}:
        if bytes in kinds:
            raise ConfigError(f"payload {src}: {what} mixes strings with other values")
        raise ConfigError(
            f"payload {src}: {what} holds {', '.join(sorted(_kind(v) for v in kinds))} values, "
            "not numbers or strings"
        )
    return _objects(leaves, shape)


def _decode(value, src: str, what: str):
    if isinstance(value, list):
        return [_decode(v, src, what) for v in value]
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict):
        if not _is_b64(value) or not isinstance(value["b64"], str):
            raise ConfigError(
                f"payload {src}: {what} holds a JSON object that is not a value",
                hint='binary strings are written {"b64": "<base64>"}; rows naming the inputs go '
                'directly under "instances"',
            )
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(
                f'payload {src}: {what} holds a {{"b64": ...}} value that is not base64'
            ) from None
    return value


def _shape(value, src: str, what: str) -> tuple[int, ...]:
    shape = []
    v = value
    while isinstance(v, list):
        shape.append(len(v))
        if not v:
            break
        v = v[0]

    def check(v, depth: int) -> None:
        if depth == len(shape):
            if isinstance(v, list):
                raise _ragged(src, what)
            return
        if not isinstance(v, list) or len(v) != shape[depth]:
            raise _ragged(src, what)
        for c in v:
            check(c, depth + 1)

    check(value, 0)
    return tuple(shape)


def _ragged(src: str, what: str) -> ConfigError:
    return ConfigError(
        f"payload {src}: {what} is ragged (lists of different lengths cannot form a tensor)",
        hint="every row of an input has the same shape; requests are built from whole rows",
    )


def _leaves(value, depth: int):
    if depth == 0:
        yield value
        return
    for v in value:
        yield from _leaves(v, depth - 1)


def _objects(values: list, shape) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr.reshape(shape)


def _kind(v) -> str:
    t = v if isinstance(v, type) else type(v)
    return {
        dict: "object",
        list: "list",
        str: "string",
        type(None): "null",
        bool: "boolean",
        int: "number",
        float: "number",
    }.get(t, t.__name__)
