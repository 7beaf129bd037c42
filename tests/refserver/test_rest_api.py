"""The REST API as TF Serving's documentation shows it, over real HTTP on 127.0.0.1."""

import json

import numpy as np
import pytest
import requests

from tests.conftest import metric_value


@pytest.fixture(scope="module")
def server(request, tmp_path_factory, mlp_base, refserver_impl):
    from tests.conftest import RefServer

    tmp = tmp_path_factory.mktemp("rest")
    mon = tmp / "mon.txt"
    mon.write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }')
    s = RefServer(
        [
            "--model_name=m",
            f"--model_base_path={mlp_base}",
            f"--monitoring_config_file={mon}",
            "--rest_api_max_request_bytes=100000",
        ],
        tmp / "server.log",
    )
    s.wait_ready("m")
    yield s
    s.stop()


ROW = [0.1 * i for i in range(16)]


def post(server, path, body, raw=False):
    data = body if raw else json.dumps(body)
    return requests.post(f"{server.url}{path}", data=data, timeout=30)


def test_status(server):
    r = requests.get(f"{server.url}/v1/models/m", timeout=5)
    assert r.status_code == 200
    assert r.json() == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert (
        requests.get(f"{server.url}/v1/models/m/versions/1", timeout=5).json()[
            "model_version_status"
        ][0]["version"]
        == "1"
    )


def test_metadata(server):
    r = requests.get(f"{server.url}/v1/models/m/metadata", timeout=5)
    assert r.status_code == 200
    doc = r.json()
    assert doc["model_spec"]["name"] == "m" and doc["model_spec"]["version"] == "1"
    sig = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in sig["inputs"]["x"]["tensor_shape"]["dim"]] == ["-1", "16"]
    assert sig["method_name"] == "tensorflow/serving/predict"


def test_row_and_columnar_predict_agree(server):
    rows = post(server, "/v1/models/m:predict", {"instances": [ROW, ROW]})
    assert rows.status_code == 200, rows.text
    preds = rows.json()["predictions"]
    assert len(preds) == 2 and len(preds[0]) == 4 and preds[0] == preds[1]
    named = post(server, "/v1/models/m:predict", {"instances": [{"x": ROW}]}).json()["predictions"]
    cols = post(server, "/v1/models/m/versions/1:predict", {"inputs": {"x": [ROW]}}).json()[
        "outputs"
    ]
    bare = post(
        server, "/v1/models/m:predict", {"signature_name": "serving_default", "inputs": [ROW]}
    )
    # the three 1-row answers are the same computation: equal to the last bit
    assert named[0] == cols[0] == bare.json()["outputs"][0]
    # a 2-row batch runs other kernels: TensorFlow rounds it differently in the last bits (seen
    # on both request paths, and on the Python one depending on the process's memory layout)
    assert np.allclose(preds[0], named[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "path, body, status, fragment",
    [
        (
            "/v1/models/nope:predict",
            {"instances": [ROW]},
            404,
            "Servable not found for request: Latest(nope)",
        ),
        ("/v1/models/m/versions/7:predict", {"instances": [ROW]}, 404, "Specific(m, 7)"),
        (
            "/v1/models/m:predict",
            {"instances": [{"z": ROW}]},
            400,
            "input tensor alias not found in signature: z",
        ),
        ("/v1/models/m:predict", {"instances": [["a"] * 16]}, 400, "expected numbers for DT_FLOAT"),
        (
            "/v1/models/m:predict",
            {"instances": [ROW[:15]]},
            400,
            "does not match the signature's [-1, 16]",
        ),
        ("/v1/models/m:predict", {"instances": [ROW, ROW[:3]]}, 400, "lists of different lengths"),
        ("/v1/models/m:predict", {"instances": [ROW], "inputs": [ROW]}, 400, "Not both"),
        ("/v1/models/m:predict", {"foo": 1}, 400, "Missing 'inputs' or 'instances' key"),
        (
            "/v1/models/m:predict",
            {"instances": [ROW], "signature_name": "other"},
            400,
            "not found in signature def",
        ),
        ("/v1/models/m:predict", {"instances": [{"b64": "!!!"}]}, 400, "expected numbers"),
        ("/v1/models/m:predict", "{not json", 400, "JSON Parse error"),
        ("/v1/models/m:predict", "[1, 2]", 400, "must be a JSON object"),
        ("/v1/models/m:classify", {"examples": []}, 501, "not implemented"),
        ("/v1/models/m/versions/x:predict", {"instances": [ROW]}, 400, "Malformed request"),
        ("/v1/foo", {}, 400, "Malformed request: POST /v1/foo"),
    ],
)
def test_bad_requests_get_the_right_code_and_message(server, path, body, status, fragment):
    r = post(server, path, body, raw=isinstance(body, str))
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"] == "application/json"
    assert fragment in r.json()["error"]
    # and the server keeps serving
    assert post(server, "/v1/models/m:predict", {"instances": [ROW]}).status_code == 200


def test_body_over_the_limit_is_refused(server):
    r = post(server, "/v1/models/m:predict", {"instances": [ROW] * 2000})
    assert r.status_code == 413
    assert "over the limit of 100000 bytes" in r.json()["error"]
    assert post(server, "/v1/models/m:predict", {"instances": [ROW]}).status_code == 200


def test_unknown_model_status_is_404(server):
    r = requests.get(f"{server.url}/v1/models/nope", timeout=5)
    assert r.status_code == 404
    assert "Could not find any versions of model nope" in r.json()["error"]


def test_metrics_count_requests_by_status(server):
    before = server.metrics()
    post(server, "/v1/models/m:predict", {"instances": [ROW]})
    post(server, "/v1/models/m:predict", {"instances": [{"z": ROW}]})
    after = server.metrics()
    name = ":tensorflow:serving:request_count"
    ok = metric_value(after, name, model_name="m", status="OK") - metric_value(
        before, name, model_name="m", status="OK"
    )
    bad = metric_value(after, name, model_name="m", status="INVALID_ARGUMENT") - metric_value(
        before, name, model_name="m", status="INVALID_ARGUMENT"
    )
    assert (ok, bad) == (1, 1)
    assert ":tensorflow:serving:request_latency_bucket{" in after
    assert 'entrypoint="REST"' in after
