"""The experiment's settings (foundation layer: imports no other stage).

- ``settings``: the frozen, keyword-only types, their defaults and the StrEnums;
- ``validate``: the one validator every setting goes through;
- ``files``: experiment files (TOML) read, overridden (``--set``), written back;
- ``sizes``: the request size mix syntax.

``from harness import config; config.load(path)`` reads and checks an experiment file.
"""

from harness.config.files import (
    BUNDLED_DIR,
    apply_override,
    from_dict,
    load,
    load_experiment,
    resolve_experiment,
    to_toml,
)
from harness.config.settings import (
    DEMO_MODELS,
    LOCUST_MASTER_PORT,
    Arrivals,
    BackendKind,
    Experiment,
    LoadConfig,
    ModelConfig,
    Protocol,
    Range,
    SearchConfig,
    ServerConfig,
    SloConfig,
    StudyConfig,
)
from harness.config.sizes import parse_input_shapes, parse_size_mix, parse_traffic

__all__ = [
    "BUNDLED_DIR",
    "DEMO_MODELS",
    "LOCUST_MASTER_PORT",
    "Arrivals",
    "BackendKind",
    "Experiment",
    "LoadConfig",
    "ModelConfig",
    "Protocol",
    "Range",
    "SearchConfig",
    "ServerConfig",
    "SloConfig",
    "StudyConfig",
    "apply_override",
    "from_dict",
    "load",
    "load_experiment",
    "parse_input_shapes",
    "parse_size_mix",
    "parse_traffic",
    "resolve_experiment",
    "to_toml",
]
