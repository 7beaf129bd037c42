"""TF Serving's configuration files as protobuf messages: batching, model config, monitoring.

``tensorflow_model_server`` reads ``--batching_parameters_file``, ``--model_config_file`` and
``--monitoring_config_file`` with protobuf's text-format parser. We read and write them with the
same parser (``google.protobuf.text_format``) against messages that have TF Serving's full names,
field names, numbers, types and wrapper types, so a file one side accepts the other accepts too,
and ``thread_pool_name`` is written ``thread_pool_name { value: "p" }`` as its StringValue type
wants. The messages are assembled below as a ``FileDescriptorProto`` (only protobuf is needed: a
load machine and ``harness --help`` import no TensorFlow) in a private descriptor pool, which keeps
them apart from the generated classes of the ``tensorflow-serving-api`` package when both are
loaded. Each field's number and type was read from the TF Serving source file named in its
comment (tensorflow/serving at 9d981c5).

One deliberate difference: ``pad_variable_length_inputs`` is a plain proto3 ``bool`` in TF
Serving; here it tracks presence (proto3 ``optional``), so that a file saying ``false`` and one
saying nothing stay apart through a round trip. The text and the wire bytes are the same.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)
from google.protobuf.message import Message

from harness.errors import ConfigError

_FD = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "bool": _FD.TYPE_BOOL,
    "double": _FD.TYPE_DOUBLE,
    "int32": _FD.TYPE_INT32,
    "int64": _FD.TYPE_INT64,
    "uint32": _FD.TYPE_UINT32,
    "string": _FD.TYPE_STRING,
}
_ENUMS = {".tensorflow.serving.ModelType"}
_WRAPPERS = {
    ".google.protobuf.Int64Value",
    ".google.protobuf.BoolValue",
    ".google.protobuf.StringValue",
}

# (name, number, type, flags): type is a scalar name or a message/enum full name; flags may hold
# "repeated", "optional" (proto3 explicit presence) or "oneof:NAME".
_BATCHING_PARAMETERS = [  # servables/tensorflow/session_bundle_config.proto, BatchingParameters
    ("max_batch_size", 1, ".google.protobuf.Int64Value", ""),
    ("batch_timeout_micros", 2, ".google.protobuf.Int64Value", ""),
    ("max_enqueued_batches", 3, ".google.protobuf.Int64Value", ""),
    ("num_batch_threads", 4, ".google.protobuf.Int64Value", ""),
    ("thread_pool_name", 5, ".google.protobuf.StringValue", ""),
    ("allowed_batch_sizes", 6, "int64", "repeated"),
    ("pad_variable_length_inputs", 7, "bool", "optional"),  # plain bool there: see above
    ("enable_large_batch_splitting", 8, ".google.protobuf.BoolValue", ""),
    ("max_execution_batch_size", 9, ".google.protobuf.Int64Value", ""),
]
_POLICY = ".tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy"
_SERVABLE_VERSION_POLICY = [  # config/file_system_storage_path_source.proto, oneof policy_choice
    ("latest", 100, _POLICY + ".Latest", "oneof:policy_choice"),
    ("all", 101, _POLICY + ".All", "oneof:policy_choice"),
    ("specific", 102, _POLICY + ".Specific", "oneof:policy_choice"),
]
_LATEST = [("num_versions", 1, "uint32", "")]  # ServableVersionPolicy.Latest
_SPECIFIC = [("versions", 1, "int64", "repeated")]  # ServableVersionPolicy.Specific
_MODEL_CONFIG = [  # config/model_server_config.proto, ModelConfig (5 and 9 are reserved there)
    ("name", 1, "string", ""),
    ("base_path", 2, "string", ""),
    ("model_type", 3, ".tensorflow.serving.ModelType", ""),  # deprecated there
    ("model_platform", 4, "string", ""),
    ("logging_config", 6, ".tensorflow.serving.LoggingConfig", ""),
    ("model_version_policy", 7, _POLICY, ""),
    # map<string, int64> version_labels = 8: a repeated entry message, key 1 and value 2
    ("version_labels", 8, ".tensorflow.serving.ModelConfig.VersionLabelsEntry", "repeated"),
]
_VERSION_LABELS_ENTRY = [("key", 1, "string", ""), ("value", 2, "int64", "")]
_MODEL_CONFIG_LIST = [("config", 1, ".tensorflow.serving.ModelConfig", "repeated")]
_MODEL_SERVER_CONFIG = [  # config/model_server_config.proto, ModelServerConfig, oneof config
    ("model_config_list", 1, ".tensorflow.serving.ModelConfigList", "oneof:config"),
    ("custom_model_config", 2, ".google.protobuf.Any", "oneof:config"),
]
_LOGGING_CONFIG = [  # config/logging_config.proto, LoggingConfig
    ("log_collector_config", 1, ".tensorflow.serving.LogCollectorConfig", ""),
    ("sampling_config", 2, ".tensorflow.serving.SamplingConfig", ""),
    ("custom_logging_config", 3, ".google.protobuf.Any", ""),
]
_SAMPLING_CONFIG = [  # config/logging_config.proto, SamplingConfig
    ("sampling_rate", 1, "double", ""),
    ("attributes", 2, "int32", ""),
    ("per_task_sampling_configs", 3, ".tensorflow.serving.PerTaskSamplingConfig", "repeated"),
]
_PER_TASK_SAMPLING_CONFIG = [  # config/logging_config.proto, PerTaskSamplingConfig
    ("dc", 1, "string", ""),
    ("task_index", 2, "int32", "optional"),
    ("sampling_rate", 3, "double", ""),
]
_LOG_COLLECTOR_CONFIG = [  # config/log_collector_config.proto, LogCollectorConfig
    ("type", 1, "string", ""),
    ("filename_prefix", 2, "string", ""),
]
# config/monitoring_config.proto, PrometheusConfig and MonitoringConfig
_PROMETHEUS_CONFIG = [("enable", 1, "bool", ""), ("path", 2, "string", "")]
_MONITORING_CONFIG = [("prometheus_config", 1, ".tensorflow.serving.PrometheusConfig", "")]
# config/model_server_config.proto, enum ModelType (deprecated there)
_MODEL_TYPE = [("MODEL_TYPE_UNSPECIFIED", 0), ("TENSORFLOW", 1), ("OTHER", 2)]


def _message(
    container, name: str, fields: list, nested: tuple = ()
) -> descriptor_pb2.DescriptorProto:
    msg = container.add(name=name)
    oneofs: list[str] = []
    synthetic: list[tuple[descriptor_pb2.FieldDescriptorProto, str]] = []
    for fname, number, ftype, flags in fields:
        f = msg.field.add(name=fname, number=number)
        f.label = _FD.LABEL_REPEATED if flags == "repeated" else _FD.LABEL_OPTIONAL
        if ftype in _SCALARS:
            f.type = _SCALARS[ftype]
        else:
            f.type = _FD.TYPE_ENUM if ftype in _ENUMS else _FD.TYPE_MESSAGE
            f.type_name = ftype
        if flags.startswith("oneof:"):
            if flags[6:] not in oneofs:
                oneofs.append(flags[6:])
            f.oneof_index = oneofs.index(flags[6:])
        elif flags == "optional":
            synthetic.append((f, "_" + fname))
    for oneof in oneofs:
        msg.oneof_decl.add(name=oneof)
    for f, oneof in synthetic:  # proto3 optional: a one-field oneof, declared after the real ones
        f.proto3_optional = True
        f.oneof_index = len(msg.oneof_decl)
        msg.oneof_decl.add(name=oneof)
    for sub_name, sub_fields, *sub_nested in nested:
        _message(msg.nested_type, sub_name, sub_fields, *sub_nested)
    return msg


def _file() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="harness/tfs_formats.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/any.proto", "google/protobuf/wrappers.proto"],
    )
    enum = fdp.enum_type.add(name="ModelType")
    for name, number in _MODEL_TYPE:
        enum.value.add(name=name, number=number)
    m = fdp.message_type
    _message(m, "BatchingParameters", _BATCHING_PARAMETERS)
    policy = ("ServableVersionPolicy", _SERVABLE_VERSION_POLICY,
              (("Latest", _LATEST), ("All", []), ("Specific", _SPECIFIC)))  # fmt: skip
    _message(m, "FileSystemStoragePathSourceConfig", [], (policy,))
    config = _message(
        m, "ModelConfig", _MODEL_CONFIG, (("VersionLabelsEntry", _VERSION_LABELS_ENTRY),)
    )
    config.nested_type[0].options.map_entry = True
    _message(m, "ModelConfigList", _MODEL_CONFIG_LIST)
    _message(m, "ModelServerConfig", _MODEL_SERVER_CONFIG)
    _message(m, "LoggingConfig", _LOGGING_CONFIG)
    _message(m, "SamplingConfig", _SAMPLING_CONFIG)
    _message(m, "PerTaskSamplingConfig", _PER_TASK_SAMPLING_CONFIG)
    _message(m, "LogCollectorConfig", _LOG_COLLECTOR_CONFIG)
    _message(m, "PrometheusConfig", _PROMETHEUS_CONFIG)
    _message(m, "MonitoringConfig", _MONITORING_CONFIG)
    return fdp


POOL = descriptor_pool.DescriptorPool()
POOL.AddSerializedFile(any_pb2.DESCRIPTOR.serialized_pb)
POOL.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
POOL.Add(_file())


def _class(name: str) -> type[Message]:
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName("tensorflow.serving." + name))


BatchingParameters = _class("BatchingParameters")
ModelServerConfig = _class("ModelServerConfig")
ModelConfigList = _class("ModelConfigList")
ModelConfig = _class("ModelConfig")
ServableVersionPolicy = _class("FileSystemStoragePathSourceConfig.ServableVersionPolicy")
MonitoringConfig = _class("MonitoringConfig")
PrometheusConfig = _class("PrometheusConfig")
MODEL_TYPE_TENSORFLOW = dict(_MODEL_TYPE)["TENSORFLOW"]

# What each file is called on TF Serving's command line, and where its format is described.
_FILES = {
    BatchingParameters: ("batching parameters file", "--batching_parameters_file",
                         "see TF Serving's batching guide for the format"),
    ModelServerConfig: ("model config file", "--model_config_file",
                        "see TF Serving's serving_config guide for the format"),
    MonitoringConfig: ("monitoring config file", "--monitoring_config_file",
                       "write 'prometheus_config { enable: true path: \"/monitoring/prometheus/metrics\" }'"),
}  # fmt: skip


def monitoring_config(metrics_path: str) -> Message:
    """A MonitoringConfig that exports Prometheus metrics at ``metrics_path`` (on the REST port)."""
    msg = MonitoringConfig()
    msg.prometheus_config.enable = True
    msg.prometheus_config.path = metrics_path
    return msg


def model_config_list(models) -> Message:
    """A ModelServerConfig listing ``models``, ``[(name, base_path), ...]``, each a TensorFlow
    SavedModel (what ``--model_config_file`` reads to serve several models)."""
    msg = ModelServerConfig()
    for name, base_path in models:
        msg.model_config_list.config.add(
            name=name, base_path=str(base_path), model_platform="tensorflow"
        )
    return msg


def to_text(message: Message) -> str:
    """The text-format file for ``message``.

    A batching file gets one line per field (one per ``allowed_batch_sizes`` entry), each wrapper
    on its line, as TF Serving's batching guide writes it; others get protobuf's indented blocks.
    """
    if message.DESCRIPTOR.full_name != BatchingParameters.DESCRIPTOR.full_name:
        return text_format.MessageToString(message, as_utf8=True)
    lines = []
    for field, value in message.ListFields():
        for item in value if _is_repeated(field) else [value]:
            one = type(message)()
            if _is_repeated(field):
                getattr(one, field.name).append(item)
            elif field.message_type is not None:
                getattr(one, field.name).CopyFrom(item)
            else:
                setattr(one, field.name, item)
            lines.append(text_format.MessageToString(one, as_one_line=True, as_utf8=True))
    return "".join(line + "\n" for line in lines)


def _is_repeated(field) -> bool:
    # ``label`` is gone from newer protobuf releases; ``is_repeated`` is missing from older ones
    flag = getattr(field, "is_repeated", None)
    return flag if flag is not None else field.label == field.LABEL_REPEATED


def parse(text: str, message_class: type[Message], source: str = "<text>") -> Message:
    """Parse text format into a new ``message_class``, as TF Serving's parser would.

    Unknown fields, a non-repeated field given twice, a malformed value or bad syntax raise a
    one-line ConfigError naming ``source``, the line and column, and the fix.
    """
    message = message_class()
    try:
        text_format.Parse(text, message, descriptor_pool=POOL)
    except text_format.ParseError as exc:
        raise _parse_error(exc, text, message_class, source) from None
    except (ValueError, RecursionError) as exc:  # e.g. Any messages nested thousands deep
        raise ConfigError(
            f"{source}: cannot parse text proto {message_class.DESCRIPTOR.full_name}: "
            f"{type(exc).__name__}: {_one_line(str(exc))[:120]}",
            hint=_FILES[message_class][2] if message_class in _FILES else None,
        ) from None
    return message


def read(path: str | os.PathLike, message_class: type[Message]) -> Message:
    """Read and parse a file, with a ConfigError naming the flag that gave it when it cannot be read."""
    what, flag, _ = _FILES[message_class]
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 text", hint=f"check {flag}") from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read {what} {path}: {exc.strerror or exc}", hint=f"check {flag}"
        ) from None
    return parse(text, message_class, str(path))


# -- error messages ------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _parse_error(exc, text: str, message_class: type[Message], source: str) -> ConfigError:
    """protobuf's ParseError as one line: where, what (its wording, single quotes), the fix."""
    line, col = exc.GetLine(), exc.GetColumn()
    detail = str(exc)
    line_text = ""
    if line is not None:
        lines = text.split("\n")  # the tokenizer counts lines by newline only
        line_text = lines[line - 1] if 0 < line <= len(lines) else ""
        detail = detail.split(" : ", 1)[-1] if detail.startswith(f"{line}:") else detail
        quoted = f"'{line_text}': "
        if detail.startswith(quoted):  # the parser quotes the whole line; we quote a part of it
            detail = detail[len(quoted) :]
    detail = _one_line(detail).replace('"', "'").rstrip(".")
    where = f"{source}:{line}:{col}" if line is not None else source
    if line_text.strip():
        detail += f", near {_excerpt(line_text, col or 1)!r}"
    name = message_class.DESCRIPTOR.full_name
    return ConfigError(
        f"{where}: cannot parse text proto {name}: {detail}",
        hint=_hint(str(exc), line_text[: (col or 1) - 1], message_class),
    )


def _excerpt(line: str, col: int, width: int = 60) -> str:
    """Up to ``width`` characters of ``line`` around column ``col`` (1-based)."""
    start = max(0, min(col - 1 - width // 2, len(line) - width))
    part = _one_line(line[start : start + width])
    return ("..." if start > 0 else "") + part + ("..." if start + width < len(line) else "")


def _hint(error: str, before: str, message_class: type[Message]) -> str | None:
    """What to change, from protobuf's message and the text before the error on its line."""
    guide = _FILES[message_class][2] if message_class in _FILES else None
    unknown = re.search(r'Message type "([\w.]+)" has no field named "([^"]*)"', error)
    if unknown:
        try:
            fields = [f.name for f in POOL.FindMessageTypeByName(unknown[1]).fields]
        except KeyError:
            return guide
        close = difflib.get_close_matches(unknown[2], fields, n=1)
        if close:
            return f"did you mean '{close[0]}'?"
        return f"{unknown[1]} has the fields {', '.join(fields)}" if fields else guide
    repeated = re.search(r'should not have multiple "(\w+)" fields', error)
    if repeated:
        return f"give {repeated[1]} once"
    if 'Expected "{"' in error:
        named = re.search(r"([A-Za-z_]\w*)\s*:\s*$", before)
        field = _find_field(named[1], message_class, messages_only=True) if named else None
        if field is not None:
            body = "value: ..." if "." + field.message_type.full_name in _WRAPPERS else "..."
            return f"{field.name} must be written as '{field.name} {{ {body} }}'"
    value_of = _field_before_value(before, message_class)
    if value_of is not None:
        name, field = value_of
        return f"{name} takes {_takes(field)}"
    return guide


def _field_before_value(before: str, root: type[Message]):
    """(name, field) whose value starts where ``before`` ends: ``name: `` or ``name { value: ``."""
    wrapped = re.search(r"([A-Za-z_]\w*)\s*:?\s*[{<]\s*value\s*:\s*$", before)
    if wrapped:
        field = _find_field(wrapped[1], root, messages_only=True)
        if field is not None and "." + field.message_type.full_name in _WRAPPERS:
            return field.name, field.message_type.fields_by_name["value"]
    plain = re.search(r"([A-Za-z_]\w*)\s*:\s*(\[[^\[\]]*)?$", before)
    field = _find_field(plain[1], root) if plain else None
    if field is not None and field.message_type is None:
        return field.name, field
    return None


def _takes(field) -> str:
    """What a scalar field's value looks like in a text proto."""
    kinds = {
        field.TYPE_INT64: "a whole number (int64)",
        field.TYPE_INT32: "a whole number (int32)",
        field.TYPE_UINT32: "a whole number from 0 (uint32)",
        field.TYPE_BOOL: "true or false",
        field.TYPE_STRING: 'a quoted string, e.g. "name"',
        field.TYPE_DOUBLE: "a number",
    }
    if field.enum_type is not None:
        return "one of " + ", ".join(v.name for v in field.enum_type.values)
    return kinds.get(field.type, "a value of its type")


def _find_field(name: str, root: type[Message], messages_only: bool = False):
    """The field called ``name`` in ``root`` or the messages under it, or None when there is
    none or several of different types (the hint would be a guess)."""
    pending, seen, found = [root.DESCRIPTOR], set(), []
    while pending:
        desc = pending.pop()
        if desc.full_name in seen:
            continue
        seen.add(desc.full_name)
        for field in desc.fields:
            if field.name == name and (field.message_type is not None or not messages_only):
                found.append(field)
            if field.message_type is not None:
                pending.append(field.message_type)
    kinds = {(f.type, f.message_type and f.message_type.full_name) for f in found}
    return found[0] if len(kinds) == 1 else None
