"""Property-based fuzzing of the reference server's REST and gRPC Predict.

Every malformed request must get the status TF Serving gives it (TFSERVING.md: bad input 400 /
INVALID_ARGUMENT, unknown model 404 / NOT_FOUND, a body over the limit 413, an unparsable
protobuf INTERNAL as gRPC's C++ core answers it) and never a 500, a dropped connection or a dead
server; valid requests sent in between must keep getting the right answer. The expected status
comes from a small oracle that knows the served model (the tiny MLP: x float32 [-1, 16] -> y
[-1, 4]) and the batching limit. Example counts are fixed and derandomised, so CI is stable.
"""

from __future__ import annotations

import base64
import json
import math
import socket

import grpc
import numpy as np
import pytest
import requests
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

MAX_BATCH = 32
BODY_LIMIT = 1 << 20
TRIED = {"rest": 0, "grpc": 0, "grpc_bytes": 0, "valid_checks": 0}
FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def server(tmp_path_factory, mlp_base, refserver_impl):
    from tests.conftest import RefServer

    tmp = tmp_path_factory.mktemp("fuzz")
    params = tmp / "batching.txt"
    params.write_text(
        f"max_batch_size {{ value: {MAX_BATCH} }}\nnum_batch_threads {{ value: 1 }}\n"
    )
    s = RefServer(
        [
            "--model_name=m",
            f"--model_base_path={mlp_base}",
            "--enable_batching",
            f"--batching_parameters_file={params}",
            f"--rest_api_max_request_bytes={BODY_LIMIT}",
        ],
        tmp / "server.log",
    )
    s.wait_ready("m")
    yield s
    s.stop()
    log = s.log()
    at = log.find("Traceback")
    assert at < 0, log[max(0, at - 500) : at + 3000]  # no request crashed a handler
    total = sum(v for k, v in TRIED.items() if k != "valid_checks")
    print(f"\nmalformed or random inputs tried: {total} {TRIED}")


@pytest.fixture(scope="module")
def http():
    with requests.Session() as session:
        yield session


@pytest.fixture(scope="module")
def channel(server):
    ch = grpc.insecure_channel(server.grpc_target)
    yield ch
    ch.close()


ROWS = np.random.default_rng(5).random((3, 16), dtype=np.float32)


@pytest.fixture(scope="module")
def expected(server, http):
    r = http.post(
        f"{server.url}/v1/models/m:predict", json={"instances": ROWS.tolist()}, timeout=30
    )
    assert r.status_code == 200
    return np.array(r.json()["predictions"], dtype=np.float32)


def check_still_serving(server, http, channel, expected) -> None:
    """A correct request over each protocol gets the correct answer."""
    TRIED["valid_checks"] += 1
    r = http.post(
        f"{server.url}/v1/models/m:predict", json={"instances": ROWS.tolist()}, timeout=30
    )
    assert r.status_code == 200, r.text
    assert np.allclose(np.array(r.json()["predictions"]), expected, atol=1e-5)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    resp = stub.Predict(valid_request(ROWS), timeout=30)
    got = np.array(resp.outputs["y"].float_val, dtype=np.float32).reshape(3, 4)
    assert np.allclose(got, expected, atol=1e-5)


def valid_request(rows: np.ndarray) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "m"
    t = req.inputs["x"]
    t.dtype = 1
    for d in rows.shape:
        t.tensor_shape.dim.add().size = d
    t.tensor_content = rows.astype(np.float32).tobytes()
    return req


# -- REST ---------------------------------------------------------------------------------------

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=False, width=32),
    st.integers(-(2**31), 2**31),
)
json_leaf = st.one_of(
    st.none(), st.booleans(), numbers, st.text(max_size=8), st.integers(), st.floats()
)
json_any = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=30,
)


@st.composite
def rows_like(draw):
    """Lists of rows: mostly near the right shape, sometimes ragged, too wide or too many."""
    n = draw(st.sampled_from([0, 1, 2, 5, MAX_BATCH, MAX_BATCH + 1, 40]))
    width = draw(st.sampled_from([16, 16, 16, 15, 17, 0]))
    rows = [draw(st.lists(numbers, min_size=width, max_size=width)) for _ in range(n)]
    if rows and draw(st.booleans()) and draw(st.booleans()):
        i = draw(st.integers(0, len(rows) - 1))
        rows[i] = draw(st.one_of(json_any, st.lists(numbers, max_size=20)))  # one bad row
    return rows


@st.composite
def rest_bodies(draw):
    kind = draw(
        st.sampled_from(["rows", "columns", "named", "any", "bytes", "deep", "b64", "both"])
    )
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "deep":
        n = draw(st.integers(1, 100_000))
        return (b"[" * n + b"]" * n) if draw(st.booleans()) else (b'{"instances":' + b"[" * n)
    if kind == "any":
        return json.dumps(draw(json_any)).encode()
    rows = draw(rows_like())
    if kind == "rows":
        doc = {"instances": rows}
    elif kind == "columns":
        doc = {"inputs": rows if draw(st.booleans()) else {"x": rows}}
    elif kind == "named":
        doc = {"instances": [{"x": r} for r in rows]}
        if rows and draw(st.booleans()):
            doc["instances"][0] = {draw(st.text(max_size=3)): rows[0]}
    elif kind == "both":
        doc = {"instances": rows, "inputs": rows}
    else:  # b64 where numbers are expected, valid base64 or not
        raw = (
            draw(st.text(max_size=12)) if draw(st.booleans()) else base64.b64encode(b"abc").decode()
        )
        doc = {"instances": [{"b64": raw}]}
    if draw(st.integers(0, 5)) == 0:
        doc["signature_name"] = draw(st.one_of(st.just("serving_default"), json_any))
    body = json.dumps(doc).encode()
    if draw(st.integers(0, 9)) == 0:  # truncated
        body = body[: draw(st.integers(0, max(0, len(body) - 1)))]
    return body


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _rows_ok(rows) -> bool:
    return (
        isinstance(rows, list)
        and 1 <= len(rows) <= MAX_BATCH
        and all(isinstance(r, list) and len(r) == 16 and all(map(_is_number, r)) for r in rows)
        and all(abs(v) < 2**63 for r in rows for v in r if isinstance(v, int))
    )


def rest_oracle(body: bytes, model: str = "m") -> int:
    """The status the reference server (and TF Serving) should answer ``body`` with. As in TF
    Serving's JSON reader, the document is parsed before the model is looked up."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return 400
    if not isinstance(doc, dict) or not isinstance(doc.get("signature_name", ""), str):
        return 400
    if model != "m":
        return 404
    if ("instances" in doc) == ("inputs" in doc):
        return 400
    if doc.get("signature_name", "serving_default") not in ("serving_default", ""):
        return 400
    if "instances" in doc:
        inst = doc["instances"]
        if isinstance(inst, list) and inst and all(isinstance(i, dict) for i in inst):
            if any(set(i) != {"x"} for i in inst):
                return 400
            inst = [i["x"] for i in inst]
        return 200 if _rows_ok(inst) else 400
    inputs = doc["inputs"]
    if isinstance(inputs, dict):
        if set(inputs) != {"x"}:
            return 400
        inputs = inputs["x"]
    return 200 if _rows_ok(inputs) else 400


@FUZZ
@given(body=rest_bodies(), unknown_model=st.integers(0, 15))
def test_rest_predict_bodies(server, http, channel, expected, body, unknown_model):
    TRIED["rest"] += 1
    model = "nope" if unknown_model == 0 else "m"
    r = http.post(
        f"{server.url}/v1/models/{model}:predict",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    want = rest_oracle(body, model)
    assert r.status_code == want, (body[:300], r.text[:300])
    if want == 200:
        doc = r.json()
        preds = doc["predictions"] if b'"instances"' in body else doc["outputs"]
        assert isinstance(preds, list) and all(len(p) == 4 for p in preds)
    else:
        assert r.headers["Content-Type"] == "application/json"
        assert isinstance(r.json()["error"], str) and r.json()["error"]
    if TRIED["rest"] % 10 == 0:
        check_still_serving(server, http, channel, expected)


def _raw_http(server, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_rest_oversized_malformed_http_and_chunked(server, http, channel, expected):
    url = f"{server.url}/v1/models/m:predict"
    big = json.dumps({"instances": [[0.5] * 16] * 20000}).encode()
    assert len(big) > BODY_LIMIT
    r = http.post(url, data=big, timeout=30)
    assert r.status_code == 413 and "over the limit" in r.json()["error"]
    claims = _raw_http(
        server, b"POST /v1/models/m:predict HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n{}"
    )
    assert claims.startswith(b"HTTP/1.1 413 ")
    cases = {
        b"GARBAGE\r\n\r\n": b"400",
        b"POST /v1/models/m:predict HTTP/1.1\r\nContent-Length: -5\r\n\r\n": b"400",
        b"POST /v1/models/m:predict HTTP/1.1\r\nno colon here\r\n\r\n": b"400",
        b"POST /v1/models/m:predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n": b"400",
        b"GET /v1/models/m/versions/x HTTP/1.1\r\n\r\n": b"400",
        b"GET /v1/nothing HTTP/1.1\r\n\r\n": b"400",
        b"GET /v1/models/m HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n": b"431",
    }
    for payload, code in cases.items():
        answer = _raw_http(server, payload)
        assert answer.split(b" ")[1] == code, (payload[:80], answer[:200])
        TRIED["rest"] += 1
    chunked = _raw_http(
        server,
        b"POST /v1/models/m:predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close"
        b'\r\n\r\n10\r\n{"instances": [[\r\n0\r\n\r\n',
    )
    assert chunked.split(b" ")[1] == b"400"  # a truncated JSON document
    TRIED["rest"] += 3
    check_still_serving(server, http, channel, expected)


# -- gRPC ---------------------------------------------------------------------------------------

VALUE_FIELDS = [
    "float_val",
    "double_val",
    "int_val",
    "int64_val",
    "bool_val",
    "string_val",
    "half_val",
]


@st.composite
def tensors(draw):
    dtype = draw(st.one_of(st.just(1), st.just(1), st.integers(0, 30)))
    dims = draw(
        st.one_of(
            st.just([draw(st.integers(0, 40)), 16]),
            st.lists(st.integers(-2, 40), max_size=4),
            st.lists(st.sampled_from([1, 16, 2**20, 2**31, 2**40, 2**62]), min_size=1, max_size=3),
        )
    )
    content = draw(st.sampled_from(["exact", "values", "one", "bytes", "none", "mixed"]))
    count = math.prod(dims) if dims and all(d >= 0 for d in dims) else 0
    spec = {"dtype": dtype, "dims": dims}
    if content == "exact" and 0 < count <= 4096:
        spec["tensor_content"] = np.ones(count, np.float32).tobytes()
    elif content == "values" and count <= 4096:
        field = draw(st.sampled_from(["float_val", *VALUE_FIELDS]))
        spec[field] = draw(_field_values(field, count))
    elif content == "one":
        spec["float_val"] = [draw(st.floats(width=32))]
    elif content == "bytes":
        spec["tensor_content"] = draw(st.binary(max_size=300))
    elif content == "mixed":
        spec["float_val"] = [1.0] * min(count, 64)
        spec["int_val"] = [1]
    return spec


def _field_values(field: str, count: int):
    n = st.one_of(st.just(count), st.integers(0, 70))
    if field in ("float_val", "double_val"):
        return n.flatmap(lambda k: st.lists(st.floats(width=32), min_size=k, max_size=k))
    if field == "bool_val":
        return n.flatmap(lambda k: st.lists(st.booleans(), min_size=k, max_size=k))
    if field == "string_val":
        return n.flatmap(lambda k: st.lists(st.binary(max_size=4), min_size=k, max_size=k))
    lo, hi = (-(2**31), 2**31 - 1) if field in ("int_val", "half_val") else (-(2**63), 2**63 - 1)
    return n.flatmap(lambda k: st.lists(st.integers(lo, hi), min_size=k, max_size=k))


def build_request(name: str, signature: str, inputs: dict) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    req.model_spec.signature_name = signature
    for alias, spec in inputs.items():
        t = req.inputs[alias]
        t.dtype = spec["dtype"]
        for d in spec["dims"]:
            t.tensor_shape.dim.add().size = d
        for key, value in spec.items():
            if key == "tensor_content":
                t.tensor_content = value
            elif key in VALUE_FIELDS:
                getattr(t, key).extend(value)
    return req


def _tensor_ok(t) -> bool:
    dims = [d.size for d in t.tensor_shape.dim]
    if t.dtype != 1 or t.tensor_shape.unknown_rank or len(dims) != 2 or dims[1] != 16:
        return False
    if not 0 <= dims[0] <= MAX_BATCH:
        return False
    count = dims[0] * 16
    others = [f for f in VALUE_FIELDS + ["uint32_val", "uint64_val"] if f != "float_val"]
    if t.tensor_content:
        return len(t.tensor_content) == count * 4
    if any(len(getattr(t, f)) for f in others):
        return False
    n = len(t.float_val)
    return n == count or (n == 1 and count > 0)


def grpc_oracle(req: predict_pb2.PredictRequest) -> grpc.StatusCode:
    spec = req.model_spec
    choice = spec.WhichOneof("version_choice")
    if not spec.name:
        return grpc.StatusCode.INVALID_ARGUMENT
    if spec.name != "m":
        return grpc.StatusCode.NOT_FOUND
    if choice == "version_label":  # the model has no labels
        return grpc.StatusCode.INVALID_ARGUMENT
    if choice == "version" and spec.version.value != 1:
        return grpc.StatusCode.NOT_FOUND
    if spec.signature_name not in ("", "serving_default"):
        return grpc.StatusCode.INVALID_ARGUMENT
    if set(req.inputs) != {"x"} or not _tensor_ok(req.inputs["x"]):
        return grpc.StatusCode.INVALID_ARGUMENT
    if any(f not in ("y",) for f in req.output_filter):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.OK


def _call(channel, payload: bytes):
    call = channel.unary_unary(
        "/tensorflow.serving.PredictionService/Predict",
        request_serializer=None,
        response_deserializer=predict_pb2.PredictResponse.FromString,
    )
    try:
        return grpc.StatusCode.OK, call(payload, timeout=30)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()


@FUZZ
@given(
    name=st.sampled_from(["m"] * 8 + ["", "other"]),
    signature=st.sampled_from([""] * 8 + ["serving_default", "nope"]),
    inputs=st.one_of(
        st.builds(lambda t: {"x": t}, tensors()),
        st.dictionaries(st.sampled_from(["x", "y", "z", ""]), tensors(), max_size=2),
    ),
)
def test_grpc_predict_tensors(server, http, channel, expected, name, signature, inputs):
    TRIED["grpc"] += 1
    req = build_request(name, signature, inputs)
    code, answer = _call(channel, req.SerializeToString())
    want = grpc_oracle(req)
    assert code == want, (str(req)[:400], answer if code != grpc.StatusCode.OK else "")
    if code == grpc.StatusCode.OK:
        dims = [d.size for d in answer.outputs["y"].tensor_shape.dim]
        assert dims == [req.inputs["x"].tensor_shape.dim[0].size, 4]
    if TRIED["grpc"] % 10 == 0:
        check_still_serving(server, http, channel, expected)


@st.composite
def protobuf_bytes(draw):
    """Garbage, or a valid request cut short or with bytes flipped."""
    valid = valid_request(ROWS).SerializeToString()
    kind = draw(st.sampled_from(["garbage", "truncated", "flipped"]))
    if kind == "garbage":
        return draw(st.binary(max_size=300))
    if kind == "truncated":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@FUZZ
@given(payload=protobuf_bytes())
def test_grpc_truncated_and_garbage_protobufs(server, http, channel, expected, payload):
    TRIED["grpc_bytes"] += 1
    code, details = _call(channel, payload)
    try:
        req = predict_pb2.PredictRequest.FromString(payload)
    except DecodeError:
        # what gRPC's C++ core (so TF Serving) answers for a message it cannot parse
        assert code == grpc.StatusCode.INTERNAL, details
    else:
        assert code == grpc_oracle(req), (payload[:100], details)
    if TRIED["grpc_bytes"] % 10 == 0:
        check_still_serving(server, http, channel, expected)
