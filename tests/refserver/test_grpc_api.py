"""The gRPC API through the tensorflow-serving-api stubs, over real sockets on 127.0.0.1."""

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory, mlp_base, refserver_impl):
    from tests.conftest import RefServer

    tmp = tmp_path_factory.mktemp("grpc")
    s = RefServer(["--model_name=m", f"--model_base_path={mlp_base}"], tmp / "server.log")
    s.wait_ready("m")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def stubs(server):
    channel = grpc.insecure_channel(server.grpc_target)
    yield (
        prediction_service_pb2_grpc.PredictionServiceStub(channel),
        model_service_pb2_grpc.ModelServiceStub(channel),
    )
    channel.close()


def request(x, name="m"):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    req.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    return req


def test_predict_answers_in_typed_fields(stubs):
    predict, _ = stubs
    x = np.random.default_rng(0).random((3, 16), dtype=np.float32)
    resp = predict.Predict(request(x), timeout=10)
    out = resp.outputs["y"]
    assert [d.size for d in out.tensor_shape.dim] == [3, 4]
    assert len(out.float_val) == 12 and not out.tensor_content
    assert resp.model_spec.name == "m" and resp.model_spec.version.value == 1
    assert resp.model_spec.signature_name == "serving_default"
    # the same rows sent as float_val instead of tensor_content give the same answer
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "m"
    t = req.inputs["x"]
    t.dtype = 1
    t.tensor_shape.dim.add().size = 3
    t.tensor_shape.dim.add().size = 16
    t.float_val.extend(x.ravel().tolist())
    assert list(predict.Predict(req, timeout=10).outputs["y"].float_val) == list(out.float_val)
    assert tf.make_ndarray(out).shape == (3, 4)


def test_output_filter(stubs):
    predict, _ = stubs
    req = request(np.zeros((1, 16), np.float32))
    req.output_filter.append("y")
    assert list(predict.Predict(req, timeout=10).outputs) == ["y"]
    req.output_filter.append("nope")
    with pytest.raises(grpc.RpcError) as exc:
        predict.Predict(req, timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "output tensor alias not found in signature: nope" in exc.value.details()


@pytest.mark.parametrize(
    "req, code, fragment",
    [
        (
            request(np.zeros((1, 16), np.float32), name="nope"),
            grpc.StatusCode.NOT_FOUND,
            "Latest(nope)",
        ),
        (
            request(np.zeros((1, 16), np.int64)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Expected tensor of type DT_FLOAT but got type DT_INT64",
        ),
        (
            request(np.zeros((1, 15), np.float32)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "does not match the signature's [-1, 16]",
        ),
        (request(np.zeros((16,), np.float32)), grpc.StatusCode.INVALID_ARGUMENT, "has shape [16]"),
        (predict_pb2.PredictRequest(), grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"),
    ],
)
def test_bad_requests(stubs, req, code, fragment):
    predict, _ = stubs
    with pytest.raises(grpc.RpcError) as exc:
        predict.Predict(req, timeout=10)
    assert exc.value.code() == code
    assert fragment in exc.value.details()
    assert (
        predict.Predict(request(np.zeros((1, 16), np.float32)), timeout=10).outputs["y"].float_val
    )


def test_wrong_input_name_and_inconsistent_content(stubs):
    predict, _ = stubs
    req = request(np.zeros((1, 16), np.float32))
    req.inputs["z"].CopyFrom(req.inputs["x"])
    with pytest.raises(grpc.RpcError) as exc:
        predict.Predict(req, timeout=10)
    assert "input tensor alias not found in signature: z" in exc.value.details()
    req = request(np.zeros((1, 16), np.float32))
    req.inputs["x"].tensor_content = b"\0" * 10
    with pytest.raises(grpc.RpcError) as exc:
        predict.Predict(req, timeout=10)
    assert "tensor_content has 10 bytes" in exc.value.details()


def test_model_status_and_metadata(stubs):
    predict, models = stubs
    sreq = get_model_status_pb2.GetModelStatusRequest()
    sreq.model_spec.name = "m"
    status = models.GetModelStatus(sreq, timeout=10).model_version_status
    assert [(s.version, s.state) for s in status] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
    ]
    mreq = get_model_metadata_pb2.GetModelMetadataRequest()
    mreq.model_spec.name = "m"
    mreq.metadata_field.append("signature_def")
    meta = predict.GetModelMetadata(mreq, timeout=10)
    sigs = get_model_metadata_pb2.SignatureDefMap()
    meta.metadata["signature_def"].Unpack(sigs)
    assert sigs.signature_def["serving_default"].inputs["x"].dtype == 1
    sreq.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as exc:
        models.GetModelStatus(sreq, timeout=10)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND


def test_other_methods_are_unimplemented_with_a_clear_message(stubs):
    predict, _ = stubs
    with pytest.raises(grpc.RpcError) as exc:
        predict.Classify(classification_pb2.ClassificationRequest(), timeout=10)
    assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "use Predict" in exc.value.details()
