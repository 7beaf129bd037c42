"""TF Serving's file formats as protobuf messages: the declared fields, round trips through text,
agreement with the generated classes of the tensorflow-serving-api package, and bad files."""

import pytest
from google.protobuf import text_format

from harness import tfs_formats
from harness.errors import ConfigError

# Field number and type of every field we declare, as TF Serving's .proto files have them
# (session_bundle_config.proto and monitoring_config.proto; the package below has no copy of
# those, so they are checked against this record).
DECLARED = {
    "BatchingParameters": {
        "max_batch_size": (1, "google.protobuf.Int64Value"),
        "batch_timeout_micros": (2, "google.protobuf.Int64Value"),
        "max_enqueued_batches": (3, "google.protobuf.Int64Value"),
        "num_batch_threads": (4, "google.protobuf.Int64Value"),
        "thread_pool_name": (5, "google.protobuf.StringValue"),
        "allowed_batch_sizes": (6, "repeated int64"),
        "pad_variable_length_inputs": (7, "bool"),
        "enable_large_batch_splitting": (8, "google.protobuf.BoolValue"),
        "max_execution_batch_size": (9, "google.protobuf.Int64Value"),
    },
    "MonitoringConfig": {"prometheus_config": (1, "tensorflow.serving.PrometheusConfig")},
    "PrometheusConfig": {"enable": (1, "bool"), "path": (2, "string")},
}
SCALAR = {3: "int64", 8: "bool", 9: "string"}


def described(field) -> tuple[int, str]:
    kind = field.message_type.full_name if field.message_type else SCALAR[field.type]
    return field.number, ("repeated " if field.is_repeated else "") + kind


@pytest.mark.parametrize("name", DECLARED)
def test_fields_carry_tf_servings_names_numbers_and_types(name):
    desc = tfs_formats.POOL.FindMessageTypeByName(f"tensorflow.serving.{name}")
    assert {f.name: described(f) for f in desc.fields} == DECLARED[name]


def test_wire_bytes_follow_the_field_numbers():
    msg = tfs_formats.BatchingParameters()
    msg.thread_pool_name.value = "p"
    assert msg.SerializeToString() == bytes([5 << 3 | 2, 3, 1 << 3 | 2, 1]) + b"p"
    msg = tfs_formats.BatchingParameters()
    msg.max_execution_batch_size.value = 7
    assert msg.SerializeToString() == bytes([9 << 3 | 2, 2, 1 << 3 | 0, 7])


def shape(desc, seen=None) -> dict:
    """Every field under a message: name, number, type, label, type name, oneof, presence."""
    seen = {} if seen is None else seen
    if desc.full_name in seen:
        return seen
    seen[desc.full_name] = fields = {}
    for f in desc.fields:
        fields[f.name] = (
            f.number,
            f.type,
            f.is_repeated,
            f.message_type.full_name if f.message_type else None,
            f.enum_type.full_name if f.enum_type else None,
            f.containing_oneof.name if f.containing_oneof else None,
            f.has_presence,
        )
        if f.message_type is not None:
            shape(f.message_type, seen)
    return seen


def test_model_server_config_matches_the_tensorflow_serving_api_package():
    """ModelServerConfig and everything under it, field for field, against TF Serving's own
    generated classes (they are installed with the server extra)."""
    theirs = pytest.importorskip("tensorflow_serving.config.model_server_config_pb2")
    assert shape(tfs_formats.ModelServerConfig.DESCRIPTOR) == shape(
        theirs.ModelServerConfig.DESCRIPTOR
    )
    ours_enum = tfs_formats.POOL.FindEnumTypeByName("tensorflow.serving.ModelType")
    their_enum = theirs.DESCRIPTOR.enum_types_by_name["ModelType"]
    assert [(v.name, v.number) for v in ours_enum.values] == [
        (v.name, v.number) for v in their_enum.values
    ]


MODELS = """
model_config_list {
  config {
    name: "ranker"
    base_path: "/models/ranker"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 3 versions: 4 } }
    version_labels { key: "stable" value: 3 }
    version_labels { key: "canary" value: 4 }
  }
  config {
    name: "mlp"
    base_path: "/models/mlp"
    model_platform: "tensorflow"
    model_version_policy { latest { num_versions: 2 } }
  }
  config {
    name: "old"
    base_path: "gs://bucket/old"
    model_type: TENSORFLOW
    model_version_policy { all {} }
    logging_config { sampling_config { sampling_rate: 0.25 } }
  }
}
"""


def test_model_server_config_round_trips_through_text():
    msg = tfs_formats.parse(MODELS, tfs_formats.ModelServerConfig, "models.config")
    configs = msg.model_config_list.config
    assert [c.name for c in configs] == ["ranker", "mlp", "old"]
    assert list(configs[0].model_version_policy.specific.versions) == [3, 4]
    assert dict(configs[0].version_labels) == {"stable": 3, "canary": 4}
    assert configs[1].model_version_policy.latest.num_versions == 2
    assert configs[2].model_version_policy.WhichOneof("policy_choice") == "all"
    assert configs[2].model_type == tfs_formats.MODEL_TYPE_TENSORFLOW
    assert configs[2].logging_config.sampling_config.sampling_rate == 0.25
    text = tfs_formats.to_text(msg)
    again = tfs_formats.parse(text, tfs_formats.ModelServerConfig)
    assert again == msg
    plain = tfs_formats.ModelServerConfig()
    text_format.Parse(text, plain)
    assert plain == msg


def test_our_model_config_reads_back_in_tensorflow_servings_classes():
    theirs = pytest.importorskip("tensorflow_serving.config.model_server_config_pb2")
    ours = tfs_formats.parse(MODELS, tfs_formats.ModelServerConfig)
    their = theirs.ModelServerConfig.FromString(ours.SerializeToString())
    assert dict(their.model_config_list.config[0].version_labels) == {"stable": 3, "canary": 4}
    their_text = text_format.MessageToString(their)
    assert tfs_formats.parse(their_text, tfs_formats.ModelServerConfig) == ours
    assert tfs_formats.to_text(ours) == their_text


def test_monitoring_config_is_written_and_read():
    text = tfs_formats.to_text(tfs_formats.monitoring_config("/monitoring/prometheus/metrics"))
    assert (
        text == 'prometheus_config {\n  enable: true\n  path: "/monitoring/prometheus/metrics"\n}\n'
    )
    msg = tfs_formats.MonitoringConfig()
    text_format.Parse(text, msg)
    assert msg.prometheus_config.enable and msg.prometheus_config.path.startswith("/monitoring")
    assert tfs_formats.parse(text, tfs_formats.MonitoringConfig) == msg
    one_line = 'prometheus_config { enable: true, path: "/m" }'
    assert tfs_formats.parse(one_line, tfs_formats.MonitoringConfig).prometheus_config.path == "/m"


@pytest.mark.parametrize(
    "cls, text, fragments",
    [
        (
            tfs_formats.ModelServerConfig,
            'model_config_list {\n  config {\n    name: "a"\n    base_pth: "/m"\n  }\n}\n',
            ["m.cfg:4:5: cannot parse text proto tensorflow.serving.ModelServerConfig",
             "Message type 'tensorflow.serving.ModelConfig' has no field named 'base_pth'",
             "(did you mean 'base_path'?)"],
        ),
        (
            tfs_formats.ModelServerConfig,
            "model_config_list { config { model_version_policy { latest { num_versions: -1 } } } }",
            ["Value out of range: -1", "(num_versions takes a whole number from 0 (uint32))"],
        ),
        (
            tfs_formats.ModelServerConfig,
            "model_config_list { config { model_type: PYTORCH } }",
            ["has no value named PYTORCH",
             "(model_type takes one of MODEL_TYPE_UNSPECIFIED, TENSORFLOW, OTHER)"],
        ),
        (
            tfs_formats.ModelServerConfig,
            'model_config_list { config { name: "a" name: "b" } }',
            ["should not have multiple 'name' fields", "(give name once)"],
        ),
        (
            tfs_formats.MonitoringConfig,
            "prometheus_config { enable: yes }",
            ["m.cfg:1:29:", "(enable takes true or false)"],
        ),
        (
            tfs_formats.MonitoringConfig,
            "prometheus_config: true",
            ["(prometheus_config must be written as 'prometheus_config { ... }')"],
        ),
        (
            tfs_formats.MonitoringConfig,
            "prometheus_config { enable: true }\nprometheus {}",
            ["m.cfg:2:1:", "has no field named 'prometheus'", "(did you mean 'prometheus_config'?)"],
        ),
        (
            tfs_formats.ModelServerConfig,
            "custom_model_config { [type.googleapis.com/tensorflow.serving.ModelServerConfig] { "
            * 2000 + "}" * 4000,
            ["m.cfg: cannot parse text proto", "RecursionError"],
        ),
    ],
)  # fmt: skip
def test_bad_files_give_one_line_naming_file_place_and_fix(cls, text, fragments):
    with pytest.raises(ConfigError) as exc:
        tfs_formats.parse(text, cls, "m.cfg")
    message = str(exc.value)
    assert "\n" not in message and len(message) < 600, message
    for fragment in fragments:
        assert fragment in message


def test_a_long_line_is_quoted_around_the_error():
    text = "allowed_batch_sizes: 1 " * 5 + "allowed_batch_sizes: x allowed_batch_sizes: 2"
    with pytest.raises(ConfigError) as exc:
        tfs_formats.parse(text, tfs_formats.BatchingParameters, "b.txt")
    assert "b.txt:1:137:" in str(exc.value)
    assert ", near '...batch_sizes: 1 allowed_batch_sizes: x allowed_batch_sizes: 2'" in str(exc.value)


def test_unreadable_files_name_the_flag(tmp_path):
    with pytest.raises(ConfigError) as exc:
        tfs_formats.read(tmp_path / "none.config", tfs_formats.ModelServerConfig)
    assert "cannot read model config file" in str(exc.value)
    assert "(check --model_config_file)" in str(exc.value)
    with pytest.raises(ConfigError, match=r"check --monitoring_config_file"):
        tfs_formats.read(tmp_path, tfs_formats.MonitoringConfig)


def test_our_messages_live_beside_tensorflow_servings_generated_ones():
    """Both sets of classes in one process (the reference server loads the package's): ours sit
    in a pool of their own, so neither registration clashes."""
    theirs = pytest.importorskip("tensorflow_serving.config.model_server_config_pb2")
    assert tfs_formats.ModelServerConfig is not theirs.ModelServerConfig
    assert (
        tfs_formats.ModelServerConfig.DESCRIPTOR.full_name == "tensorflow.serving.ModelServerConfig"
    )
