"""TF Serving's gRPC services over the reference server's model manager.

Messages are the ``tensorflow-serving-api`` package's own, so any TF Serving client works.
"""

from __future__ import annotations

import logging
import time

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from harness.refserver.predict import Predictor, select_outputs
from harness.refserver.status import ServingError
from harness.refserver.tensors import numpy_to_proto, proto_to_numpy

log = logging.getLogger("harness.refserver")
monotonic = time.monotonic


def _one_line_decode_errors(record: logging.LogRecord) -> bool:
    """grpc logs a traceback for every request it cannot parse (it answers INTERNAL, as TF
    Serving's C++ core does): keep one line, so garbage from a client cannot flood the log."""
    if record.exc_info and record.getMessage().startswith("Exception deserializing"):
        record.msg = f"{record.getMessage()} {record.exc_info[1]}"
        record.args = ()
        record.exc_info = None
        record.exc_text = None
    return True


logging.getLogger("grpc._common").addFilter(_one_line_decode_errors)
_CODES = {c.name: c for c in grpc.StatusCode}


def _version_of(spec) -> tuple[int | None, str | None]:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.version.value, None
    if choice == "version_label":
        return None, spec.version_label
    return None, None


def _abort(context, err: ServingError):
    context.abort(_CODES.get(err.code, grpc.StatusCode.UNKNOWN), err.message)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, predictor: Predictor) -> None:
        self.p = predictor

    def Predict(self, request, context):
        started = monotonic()
        p = self.p
        spec = request.model_spec
        name = spec.name
        try:
            version, label = _version_of(spec)
            model, sig = p.resolve(name, version, label, spec.signature_name)
            given = {alias: proto_to_numpy(tp, alias) for alias, tp in request.inputs.items()}
            aliases = select_outputs(sig, request.output_filter)
            remaining = context.time_remaining()
            deadline = None if remaining is None or remaining > 1e8 else started + remaining
            outputs = p.run(name, model, sig, given, deadline)
        except ServingError as err:
            p.record(name, err.code, started, "GRPC")
            _abort(context, err)
        except Exception as exc:  # a bug of ours: answer INTERNAL, log it, keep serving
            log.exception("Predict failed")
            p.record(name, "INTERNAL", started, "GRPC")
            context.abort(grpc.StatusCode.INTERNAL, f"Internal error: {type(exc).__name__}")
        response = predict_pb2.PredictResponse()
        ms = response.model_spec
        ms.name = name
        ms.version.value = model.version
        ms.signature_name = sig.name
        out = response.outputs
        for alias, spec_, arr in zip(sig.outputs, sig.outputs.values(), outputs):
            if alias in aliases:
                numpy_to_proto(arr, out[alias], spec_.dtype)
        p.record(name, "OK", started, "GRPC")
        return response

    def GetModelMetadata(self, request, context):
        spec = request.model_spec
        try:
            if list(request.metadata_field) != ["signature_def"]:
                raise ServingError(
                    "INVALID_ARGUMENT",
                    "Metadata field(s) not supported: only signature_def may be requested "
                    f"(got {list(request.metadata_field)})",
                )
            version, label = _version_of(spec)
            model = self.p.manager.resolve(spec.name, version, label)
        except ServingError as err:
            _abort(context, err)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = model.version
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for key, sd in model.signature_defs.items():
            sig_map.signature_def[key].CopyFrom(sd)
        response.metadata["signature_def"].Pack(sig_map)
        return response

    def Classify(self, request, context):
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "Classify is not implemented by the reference server; use Predict",
        )

    def Regress(self, request, context):
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "Regress is not implemented by the reference server; use Predict",
        )

    def MultiInference(self, request, context):
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "MultiInference is not implemented by the reference server; use Predict",
        )


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, predictor: Predictor) -> None:
        self.p = predictor

    def GetModelStatus(self, request, context):
        spec = request.model_spec
        try:
            version, label = _version_of(spec)
            statuses = self.p.manager.statuses(spec.name, version, label)
        except ServingError as err:
            _abort(context, err)
        response = get_model_status_pb2.GetModelStatusResponse()
        for st in statuses:
            mv = response.model_version_status.add()
            mv.version = st.version
            mv.state = st.state
            mv.status.error_code = _CODES[st.error_code].value[0] if st.error_code in _CODES else 2
            mv.status.error_message = st.error_message
        return response

    def HandleReloadConfigRequest(self, request, context):
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "HandleReloadConfigRequest is not implemented by the reference server; restart it with a new "
            "--model_config_file",
        )


def add_services(server: grpc.Server, predictor: Predictor) -> None:
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(predictor), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(predictor), server)
