"""The gRPC Locust user (imported inside Locust processes only).

Calls go through ``harness.load.grpc_channel`` (one HTTP/2 connection per process, on gevent;
harness.load.http2's docstring says why not grpcio). grpcio is still used once per process,
before the load, to read the model's signature (GetModelMetadata).
"""

from __future__ import annotations

import re

from locust import User, task

from harness.load import grpc_channel, payloads, status
from harness.load.locust_common import _PredictUser

PREDICT = "/tensorflow.serving.PredictionService/Predict"
MAX_RECEIVE = 1 << 30

_TRANSPORT = grpc_channel.TRANSPORT_DETAILS  # UNAVAILABLE with these details: no answer at all


class GrpcPredictUser(_PredictUser, User):
    """Predict over gRPC (``--host grpc://127.0.0.1:8500``)."""

    abstract = True
    request_type = "grpc"

    def on_start(self) -> None:
        target = re.sub(r"^grpcs?://", "", self.host or "127.0.0.1:8500").rstrip("/")
        self.target = target
        self.call = grpc_channel.Channel(
            target,
            PREDICT,
            timeout=self.environment.parsed_options.request_timeout,
            max_receive=MAX_RECEIVE,
        )
        self._setup()

    def on_stop(self) -> None:
        self.call.close()

    @task
    def predict(self) -> None:
        self._predict()

    def _signature(self, o, model: str):
        return payloads.signature_from_grpc(self.target, model, o.signature_name)

    def _encoder(self, o, model: str):
        return payloads.grpc_encoder(
            model, "" if o.signature_name == "serving_default" else o.signature_name
        )

    def _send(self, body: bytes, model: str) -> tuple[int, str, int]:
        # the model's name travels in the request body (its ModelSpec)
        code, detail, length = self.call(body)
        if code == grpc_channel.UNAVAILABLE and _TRANSPORT.search(detail):
            return status.TRANSPORT, detail, 0
        return code, detail, length
