"""DT_STRING on both request paths: string_val over gRPC, {"b64": ...} and plain strings over
REST, string outputs as TF Serving writes them (REST: b64 objects for outputs named *_bytes),
batched and unbatched, and the image_jpeg demo model answering real JPEGs."""

import base64
import concurrent.futures
import json

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from harness import dtypes

BINARY = b"\xff\xd8\x00\x01tail"  # not UTF-8, with a NUL inside
TEXT = b"hello"


@pytest.fixture(scope="session")
def strings_base(model_root):
    """A model with a string input and three outputs: the input back (echo_bytes), upper-cased
    (upper) and each string's length in bytes (length)."""
    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(text):
        return {
            "echo_bytes": tf.identity(text),
            "upper": tf.strings.upper(text),
            "length": tf.strings.length(text),
        }

    module.serve = serve
    base = model_root / "strings"
    tf.saved_model.save(module, str(base / "1"), signatures={"serving_default": serve})
    return base


@pytest.fixture(scope="session")
def jpeg_base(model_root):
    from harness.models.export import ensure

    base = model_root / "image_jpeg"
    ensure("image_jpeg", base)
    return base


@pytest.fixture(scope="module")
def server(tmp_path_factory, strings_base, jpeg_base, refserver_impl):
    from tests.conftest import RefServer

    tmp = tmp_path_factory.mktemp("strings")
    config = tmp / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'  config {{ name: "s" base_path: "{strings_base}" model_platform: "tensorflow" }}\n'
        f'  config {{ name: "jpeg" base_path: "{jpeg_base}" model_platform: "tensorflow" }}\n'
        "}\n"
    )
    s = RefServer([f"--model_config_file={config}"], tmp / "server.log")
    s.wait_ready("s")
    s.wait_ready("jpeg")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def predict(server):
    channel = grpc.insecure_channel(server.grpc_target)
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict
    channel.close()


def string_request(values, name="s", alias="text"):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    t = req.inputs[alias]
    t.dtype = dtypes.DT_STRING
    t.tensor_shape.dim.add().size = len(values)
    t.string_val.extend(values)
    return req


def test_grpc_string_val_in_and_out(predict):
    resp = predict(string_request([BINARY, TEXT]), timeout=30)
    echo = resp.outputs["echo_bytes"]
    assert echo.dtype == dtypes.DT_STRING and not echo.tensor_content
    assert list(echo.string_val) == [BINARY, TEXT]  # byte for byte, NUL and 0xff included
    assert list(resp.outputs["upper"].string_val) == [BINARY.upper(), b"HELLO"]
    assert list(resp.outputs["length"].int_val) == [len(BINARY), len(TEXT)]
    # TensorFlow's own client encoding (tf.make_tensor_proto) gives the same answer
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "s"
    req.inputs["text"].CopyFrom(tf.make_tensor_proto([BINARY, TEXT]))
    assert list(predict(req, timeout=30).outputs["echo_bytes"].string_val) == [BINARY, TEXT]


def test_grpc_strings_in_tensor_content_or_numbers_are_refused(predict):
    req = string_request([TEXT])
    req.inputs["text"].tensor_content = b"hello"
    with pytest.raises(grpc.RpcError) as exc:
        predict(req, timeout=30)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "DT_STRING tensors cannot use tensor_content" in exc.value.details()
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "s"
    req.inputs["text"].CopyFrom(tf.make_tensor_proto(np.zeros(2, np.float32)))
    with pytest.raises(grpc.RpcError) as exc:
        predict(req, timeout=30)
    assert "Expected tensor of type DT_STRING" in exc.value.details()


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def post(server, model, body):
    r = requests.post(f"{server.url}/v1/models/{model}:predict", data=json.dumps(body), timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_rest_b64_and_plain_strings_in_b64_out_for_bytes_outputs(server):
    rows = post(server, "s", {"instances": [b64(BINARY), "hello"]})["predictions"]
    # echo_bytes ends in _bytes: b64 objects, even for text; upper: a JSON string where it is
    # UTF-8 (BINARY upper-cased is not, and JSON cannot carry it any other way)
    assert rows[0] == {"echo_bytes": b64(BINARY), "upper": b64(BINARY.upper()), "length": len(BINARY)}
    assert rows[1] == {"echo_bytes": b64(TEXT), "upper": "HELLO", "length": 5}
    cols = post(server, "s", {"inputs": {"text": ["abc", b64(b"de")]}})["outputs"]
    assert cols == {
        "echo_bytes": [b64(b"abc"), b64(b"de")],
        "upper": ["ABC", "DE"],
        "length": [3, 2],
    }
    one = post(server, "s", {"instances": [{"text": b64(b"x")}], "output_filter": ["echo_bytes"]})
    assert one["predictions"] == [b64(b"x")]  # a single output: its values, still b64


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"instances": [{"b64": "!!!"}]}, "Unable to base64 decode"),
        ({"instances": [1, 2]}, "expected strings for DT_STRING"),
        ({"instances": [["a"], ["b", "c"]]}, "ragged"),
    ],
)
def test_rest_bad_strings_are_refused(server, body, fragment):
    r = requests.post(f"{server.url}/v1/models/s:predict", data=json.dumps(body), timeout=30)
    assert r.status_code == 400 and fragment in r.json()["error"], r.text


def test_image_jpeg_scores_real_jpegs_over_both_protocols(server, predict):
    from harness.models.export import sample_request

    body = sample_request("image_jpeg", rows=4)
    images = [base64.b64decode(i["b64"]) for i in body["instances"]]
    assert all(i[:2] == b"\xff\xd8" for i in images)  # JPEG start-of-image markers
    rest = np.array(post(server, "jpeg", body)["predictions"])
    assert rest.shape == (4, 10) and np.allclose(rest.sum(axis=1), 1, atol=1e-5)
    resp = predict(string_request(images, "jpeg", "image_bytes"), timeout=60)
    grpc_scores = np.array(resp.outputs["scores"].float_val).reshape(4, 10)
    assert np.allclose(grpc_scores, rest, atol=1e-6)
    r = requests.post(
        f"{server.url}/v1/models/jpeg:predict", data=json.dumps({"instances": ["not a jpeg"]})
    )
    assert r.status_code == 400 and "jpeg" in r.json()["error"].lower(), r.text


def test_string_requests_are_batched(start_server, strings_base):
    s = start_server(
        strings_base,
        name="s",
        batching="max_batch_size { value: 8 } batch_timeout_micros { value: 20000 } "
        "num_batch_threads { value: 1 } allowed_batch_sizes: 4 allowed_batch_sizes: 8",
    )
    channel = grpc.insecure_channel(s.grpc_target)
    call = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict
    values = [[bytes([65 + i]) * (i + 1)] * (1 + i % 2) for i in range(6)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda v: call(string_request(v), timeout=30), values))
    channel.close()
    for v, resp in zip(values, answers):  # each request gets its own rows back, none padding
        assert list(resp.outputs["echo_bytes"].string_val) == v
        assert list(resp.outputs["length"].int_val) == [len(x) for x in v]
