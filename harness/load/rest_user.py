"""The REST Locust user (imported inside Locust processes only)."""

from __future__ import annotations

from geventhttpclient import HTTPClient
from locust import User, task

from harness.load import payloads, status
from harness.load.locust_common import _PredictUser


class RestPredictUser(_PredictUser, User):
    """Predict over REST (``--host http://127.0.0.1:8501``), one keep-alive connection per user."""

    abstract = True
    request_type = "rest"

    def on_start(self) -> None:
        o = self.environment.parsed_options
        self.http = HTTPClient.from_url(
            self.host or "http://127.0.0.1:8501",
            concurrency=1,
            connection_timeout=o.request_timeout,
            network_timeout=o.request_timeout,
        )
        self._setup()
        self.paths = {m: f"/v1/models/{m}:predict" for m in self.models}

    def on_stop(self) -> None:
        self.http.close()

    @task
    def predict(self) -> None:
        self._predict()

    def _signature(self, o, model: str):
        return payloads.signature_from_rest(self.host, model, o.signature_name)

    def _encoder(self, o, model: str):
        return payloads.rest_encoder(
            "" if o.signature_name == "serving_default" else o.signature_name
        )

    def _send(self, body: bytes, model: str) -> tuple[int, str, int]:
        try:
            resp = self.http.post(
                self.paths[model], body=body, headers={"Content-Type": "application/json"}
            )
            text = resp.read()
        except Exception as exc:  # socket errors, timeouts: no answer at all
            return status.TRANSPORT, f"{type(exc).__name__}: {exc}", 0
        code = resp.status_code
        if code == 200:
            return status.OK, "", len(text)
        return status.from_http(code), text.decode(errors="replace"), len(text)
