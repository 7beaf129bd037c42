"""The gRPC Locust user (imported inside Locust processes only)."""

from __future__ import annotations

import re

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, task

from harness.load import payloads, status
from harness.load.locust_common import _PredictUser

grpc_gevent.init_gevent()  # gRPC's own gevent integration: calls yield to other greenlets

_TRANSPORT = re.compile(
    r"failed to connect|Connection refused|Connection reset|Socket closed|Broken pipe|"
    r"connections to all backends failing|Stream removed|GOAWAY|Network is unreachable",
    re.IGNORECASE,
)


class GrpcPredictUser(_PredictUser, User):
    """Predict over gRPC (``--host grpc://127.0.0.1:8500``)."""

    abstract = True
    request_type = "grpc"

    def on_start(self) -> None:
        target = re.sub(r"^grpcs?://", "", self.host or "127.0.0.1:8500").rstrip("/")
        self.channel = grpc.insecure_channel(
            target, options=[("grpc.max_receive_message_length", 1 << 30)]
        )
        self.call = self.channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
        self.target = target
        self._setup()

    def on_stop(self) -> None:
        self.channel.close()

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
        try:
            resp = self.call(body, timeout=self.environment.parsed_options.request_timeout)
            return status.OK, "", len(resp)
        except grpc.RpcError as exc:
            code = exc.code()
            detail = exc.details() or ""
            if code == grpc.StatusCode.UNAVAILABLE and _TRANSPORT.search(detail):
                return status.TRANSPORT, detail, 0
            return code.value[0], detail, 0
