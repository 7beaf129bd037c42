"""The TF-free wire codec and payloads, checked against the real protobuf classes."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2

from harness.config import parse_size_mix
from harness.load import payloads, wire


def test_predict_request_parses_with_the_real_messages():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    ids = np.array([[1], [2], [3]], dtype=np.int64)
    data = wire.predict_request("m", {"x": x, "ids": ids}, signature_name="sig", version=7)
    req = predict_pb2.PredictRequest.FromString(data)
    assert req.model_spec.name == "m" and req.model_spec.signature_name == "sig"
    assert req.model_spec.version.value == 7
    np.testing.assert_array_equal(tf.make_ndarray(req.inputs["x"]), x)
    np.testing.assert_array_equal(tf.make_ndarray(req.inputs["ids"]), ids)


def test_signature_inputs_from_a_real_metadata_response():
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    sd = sig_map.signature_def["serving_default"]
    info = sd.inputs["image"]
    info.name = "serving_default_image:0"
    info.dtype = 1
    for d in (-1, 128, 128, 3):
        info.tensor_shape.dim.add().size = d
    sd.inputs["flag"].dtype = 10
    sd.inputs["flag"].tensor_shape.unknown_rank = True
    resp = get_model_metadata_pb2.GetModelMetadataResponse()
    resp.model_spec.name = "m"
    resp.metadata["signature_def"].Pack(sig_map)
    got = wire.signature_inputs(resp.SerializeToString())
    assert got == {"image": (1, (-1, 128, 128, 3)), "flag": (10, None)}
    with pytest.raises(
        ValueError, match="signature 'other' not found; the model has: serving_default"
    ):
        wire.signature_inputs(resp.SerializeToString(), "other")


def test_pool_follows_the_mix_and_builds_valid_bodies():
    specs = [payloads.InputSpec("x", 1, (-1, 16)), payloads.InputSpec("n", 9, (-1,))]
    pool = payloads.PayloadPool(
        specs, parse_size_mix("1:70,5:30"), payloads.grpc_encoder("m"), seed=3
    )
    picks = [pool.pick() for _ in range(5000)]
    share = sum(1 for s, _ in picks if s == 5) / len(picks)
    assert 0.26 < share < 0.34
    size, body = next(p for p in picks if p[0] == 5)
    req = predict_pb2.PredictRequest.FromString(body)
    assert tf.make_ndarray(req.inputs["x"]).shape == (5, 16)
    assert tf.make_ndarray(req.inputs["n"]).dtype == np.int64


def test_workers_do_not_import_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys, locust\n"
        "from harness.load import grpc_user, rest_user, payloads, wire\n"
        "print('tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
