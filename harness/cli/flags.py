"""Flags that set experiment settings, built from a table: ``{section: ((flag, field, help),
...)}``. The field gives each flag its type, its choices and its default, so a flag measures
with exactly the defaults of an experiment file. ``harness run`` and ``harness tune`` build
their flags from tables of this one form (run's ``FLAGS``; tune's rows are picked from it).
"""

from __future__ import annotations

import enum
import typing

from harness.config import LoadConfig, ModelConfig, ServerConfig, SloConfig, StudyConfig

SECTIONS = {
    "model": ModelConfig,
    "server": ServerConfig,
    "load": LoadConfig,
    "slo": SloConfig,
    "study": StudyConfig,
}


def add_setting_flags(groups: dict, table: dict, *, show_defaults: bool = True) -> None:
    """One flag per row of ``table`` in ``groups[section]`` (an argparse group or parser);
    ``show_defaults``: name the field's default in the help (off where an experiment file, not
    the field, gives the default)."""
    for section, rows in table.items():
        hints = typing.get_type_hints(SECTIONS[section])
        defaults = SECTIONS[section]()
        for flag, field, text in rows:
            default = getattr(defaults, field) if show_defaults else None
            _add_setting(groups[section], flag, f"{section}.{field}", hints[field], default, text)


def _add_setting(group, flag: str, dest: str, hint, default, text: str) -> None:
    """One flag for one settings field. Its argparse default is None, so that only the flags
    given reach the settings and every other value keeps the field's own default."""
    if hint is bool:
        group.add_argument(flag, dest=dest, action="store_true", default=None, help=text)
        return
    if typing.get_origin(hint) is tuple:  # a list setting: the flag repeated
        metavar = flag.lstrip("-").replace("-", "_").upper()
        group.add_argument(
            flag, dest=dest, action="append", default=None, help=text, metavar=metavar
        )
        return
    # argparse's own metavar (from the flag, not the dotted dest); choices speak for themselves
    kwargs = {"type": hint, "metavar": flag.lstrip("-").replace("-", "_").upper()}
    if isinstance(hint, type) and issubclass(hint, enum.StrEnum):
        kwargs = {"choices": [m.value for m in hint]}
    if default not in ("", None) and "default:" not in text:
        text += f" (default: {default})"
    group.add_argument(flag, dest=dest, default=None, help=text, **kwargs)


def settings_from(args, table: dict) -> dict[str, dict]:
    """The settings the flags of ``table`` gave, as the experiment file's tables:
    ``{section: {field: value}}``."""
    data: dict[str, dict] = {}
    for section, rows in table.items():
        for _, field, _ in rows:
            value = getattr(args, f"{section}.{field}")
            if value is not None:
                data.setdefault(section, {})[field] = value
    return data


def backend_from(server: dict) -> dict:
    """The server flags with the backend they imply: ``--image`` the Docker backend, ``--binary``
    the process backend (an explicit ``--backend`` stays); both at once is refused."""
    from harness.errors import ConfigError

    server = dict(server)
    if "image" in server and "binary" in server:
        raise ConfigError(
            "--image and --binary both given",
            hint="--image runs the server in Docker, --binary as a process: give one of them",
        )
    if "image" in server:
        server.setdefault("backend", "docker")
    if "binary" in server:
        server.setdefault("backend", "process")
    return server


def pick(table: dict, flags: typing.Iterable[str]) -> dict:
    """The rows of ``table`` for ``flags``, by section, in the table's order."""
    wanted = set(flags)
    out = {s: tuple(r for r in rows if r[0] in wanted) for s, rows in table.items()}
    missing = wanted - {r[0] for rows in out.values() for r in rows}
    if missing:
        raise KeyError(f"no such flags in the table: {sorted(missing)}")
    return {s: rows for s, rows in out.items() if rows}
