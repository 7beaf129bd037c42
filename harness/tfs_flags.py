"""The flags ``tensorflow_model_server`` defines, and a check that a command line uses no other.

The names are a fact read from TF Serving's ``model_servers/main.cc`` (48 of them). The real
binary prints ``unknown argument: <arg>`` for anything else and starts anyway, ignoring it, so a
misspelt or made-up flag fails silently: the harness checks every flag it would pass (an
experiment's ``server.extra_flags`` at load time, the backends' command lines in the tests).
Standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable

FLAGS = frozenset(
    {
        "allow_version_labels_for_unavailable_models",
        "batching_parameters_file",
        "enable_batching",
        "enable_grpc_healthcheck_service",
        "enable_model_warmup",
        "enable_per_model_batching_parameters",
        "enable_profiler",
        "enable_serialization_as_tensor_content",
        "enable_signature_method_name_check",
        "file_system_poll_wait_seconds",
        "flush_filesystem_caches",
        "grpc_channel_arguments",
        "grpc_max_threads",
        "grpc_socket_path",
        "load_retry_interval_micros",
        "max_num_load_retries",
        "mixed_precision",
        "model_base_path",
        "model_config_file",
        "model_config_file_poll_wait_seconds",
        "model_name",
        "monitoring_config_file",
        "num_load_threads",
        "num_request_iterations_for_warmup",
        "num_tflite_interpreters_per_pool",
        "num_tflite_pools",
        "num_unload_threads",
        "per_process_gpu_memory_fraction",
        "platform_config_file",
        "port",
        "prefer_tflite_model",
        "remove_unused_fields_from_bundle_metagraph",
        "rest_api_enable_cors_support",
        "rest_api_num_threads",
        "rest_api_port",
        "rest_api_timeout_in_ms",
        "saved_model_tags",
        "skip_initialize_tpu",
        "ssl_config_file",
        "tensorflow_inter_op_parallelism",
        "tensorflow_intra_op_parallelism",
        "tensorflow_session_config_file",
        "tensorflow_session_parallelism",
        "thread_pool_factory_config_file",
        "use_alts_credentials",
        "version",
        "xla_cpu_compilation_enabled",
        "xla_gpu_compilation_enabled",
    }
)

# What the harness itself sets on every server: an extra flag may not set them a second time.
HARNESS_SETS = frozenset(
    {
        "port",
        "rest_api_port",
        "model_name",
        "model_base_path",
        "model_config_file",
        "enable_batching",
        "batching_parameters_file",
        "monitoring_config_file",
        "enable_per_model_batching_parameters",
    }
)


def flag_name(arg: str) -> str | None:
    """The name in ``--name`` or ``--name=value``; None for anything else (a bare word, ``-x``).

    TF Serving's parser takes only the ``--name=value`` form (and ``--name`` for booleans): a
    value in the next argument is itself an unknown argument to it.
    """
    if not arg.startswith("--") or len(arg) < 3:
        return None
    return arg[2:].partition("=")[0]


def unknown(args: Iterable[str]) -> list[str]:
    """The arguments ``tensorflow_model_server`` would print as ``unknown argument`` and ignore."""
    return [a for a in args if flag_name(a) not in FLAGS]
