"""The traffic split on the load side, without a server: the Locust command carries it, each
record keeps its model, old chunks (before the column) read as model 0, figures per model."""

from __future__ import annotations

import numpy as np

from harness.config import LoadConfig
from harness.endpoint import Endpoint
from harness.load.recorder import Recorder
from harness.load.runner import locust_command, per_model, traffic_models
from harness.samples import Samples


def test_the_locust_command_carries_the_split(tmp_path):
    ep = Endpoint.at("127.0.0.1", 8500, 8501, "ranker")
    cmd = locust_command(ep, LoadConfig(traffic="ranker:70,mlp:30"), tmp_path, 10)
    assert cmd[cmd.index("--traffic") + 1] == "ranker:70,mlp:30"
    assert "--traffic" not in locust_command(ep, LoadConfig(), tmp_path, 10)
    assert traffic_models(LoadConfig(traffic="ranker:70,mlp:30"), "x") == ["ranker", "mlp"]
    assert traffic_models(LoadConfig(), "x") == ["x"]


def test_records_keep_their_model_and_figures_come_per_model(tmp_path):
    rec = Recorder(tmp_path)
    for i in range(100):  # ranker (0): 70 requests at 2 ms; mlp (1): 30 at 10 ms, 3 failed
        model = 0 if i % 10 < 7 else 1
        code = 14 if model == 1 and i % 10 == 9 and i < 30 else 0
        rec.add(1000.0 + i / 100, 2000.0 if model == 0 else 10_000.0, code, 1, 0.0, model)
    rec.flush()
    samples = Samples.read(tmp_path)
    assert len(samples.of_model(0)) == 70 and len(samples.of_model(1)) == 30
    figures = per_model(samples, ["ranker", "mlp"], 1000.0, 1001.0)
    assert figures["ranker"].requests == 70 and figures["ranker"].p99_ms == 2.0
    assert figures["mlp"].ok == 27 and figures["mlp"].errors == {"UNAVAILABLE": 3}
    assert per_model(samples, ["ranker"], 1000.0, 1001.0) == {}


def test_chunks_without_the_model_column_read_as_model_zero(tmp_path):
    cols = {
        "t_intended": np.array([1.0, 2.0]), "latency_us": np.array([5.0, 6.0]),
        "code": np.array([0, 0], np.int16), "size": np.array([1, 1], np.int32),
        "late_us": np.array([0, 0], np.float32),
    }  # fmt: skip
    with open(tmp_path / "samples-old.npz", "wb") as f:
        np.savez(f, **cols, oversize=np.frombuffer(b"[]", dtype=np.uint8))
    samples = Samples.read(tmp_path)
    assert list(samples["model"]) == [0, 0] and len(samples.of_model(0)) == 2
