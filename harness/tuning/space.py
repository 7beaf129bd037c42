"""The search space: Optuna suggestions -> batching parameters, thread counts and workload.

Also the baselines every study measures first: TF Serving's default (batching off), the CPU
starting point from TF Serving's batching guide, and the config copied around the internet.
"""

from __future__ import annotations

import dataclasses
import json

from harness import labels
from harness.batching import BatchingParameters, describe, schedulable_cores
from harness.config import Range, SearchConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrialConfig:
    """Everything one trial runs with."""

    batching: BatchingParameters | None  # None: --enable_batching off
    intra_op_parallelism: int = 0
    inter_op_parallelism: int = 0
    users: int | None = None  # None: the experiment's load.users
    # per-model batching: each model's own parameters (its batching_params.pbtxt), by name;
    # ``batching`` then holds only the thread pool every model shares (its size and name)
    per_model: tuple[tuple[str, BatchingParameters], ...] = ()

    def model_batching(self, name: str) -> BatchingParameters | None:
        """``name``'s own batching parameters; None: the shared file applies."""
        return dict(self.per_model).get(name)

    def describe(self) -> str:
        if self.per_model and self.batching is not None:
            text = f"thr={self.batching.num_batch_threads} " + " ".join(
                f"{name}[mbs={b.max_batch_size} t={b.batch_timeout_micros}us "
                f"q={b.max_enqueued_batches}]"
                for name, b in self.per_model
            )
        else:
            text = describe(self.batching)
        if self.intra_op_parallelism or self.inter_op_parallelism:
            text += f" intra={self.intra_op_parallelism} inter={self.inter_op_parallelism}"
        if self.users is not None:
            text += f" users={self.users}"
        return text

    def as_dict(self) -> dict:
        out = {"enable_batching": self.batching is not None}
        if self.batching is not None:
            for k, v in dataclasses.asdict(self.batching).items():
                if v not in (None, ()):
                    out[k] = list(v) if isinstance(v, tuple) else v
        out.update(
            intra_op_parallelism=self.intra_op_parallelism,
            inter_op_parallelism=self.inter_op_parallelism,
        )
        if self.users is not None:
            out["users"] = self.users
        if self.per_model:
            out["per_model"] = {
                name: {k: v for k, v in dataclasses.asdict(b).items() if v not in (None, ())}
                for name, b in self.per_model
            }
        return out

    @classmethod
    def from_dict(cls, d: dict) -> TrialConfig:
        batching = None
        if d.get("enable_batching", True):
            fields = {f.name for f in dataclasses.fields(BatchingParameters)}
            values = {
                k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in fields
            }
            batching = BatchingParameters(**values)
        return cls(
            batching=batching,
            intra_op_parallelism=d.get("intra_op_parallelism", 0),
            inter_op_parallelism=d.get("inter_op_parallelism", 0),
            users=d.get("users"),
            per_model=tuple(
                (name, BatchingParameters(**values))
                for name, values in (d.get("per_model") or {}).items()
            ),
        )


def config_key(config: dict) -> str:
    """A config's identity (``TrialConfig.as_dict()``, as trials keep it): two trials with the
    same key ran the same config."""
    return json.dumps(config, sort_keys=True)


def _suggest(trial, name: str, r: Range, *, high_default: int | None = None):
    if r.choices:
        return trial.suggest_categorical(name, list(r.choices))
    high = r.high if r.high else high_default
    if r.zero and trial.suggest_categorical(f"{name}_is_zero", [True, False]):
        return 0
    if (
        isinstance(r.low, int)
        and isinstance(high, int)
        or float(r.low).is_integer()
        and float(high).is_integer()
    ):
        return trial.suggest_int(name, int(r.low), int(high), log=r.log, step=r.step or 1)
    return trial.suggest_float(name, r.low, high, log=r.log)


# The pool every model's batches run on under per-model batching; TF Serving's own default name.
SHARED_POOL = "batch_threads"


def suggest_per_model(trial, space: SearchConfig, cores: int) -> TrialConfig:
    """Per-model batching: the queue parameters (max_batch_size, batch_timeout_micros,
    max_enqueued_batches) for each model of ``space.per_model_batching``, named
    ``<model>.<parameter>``; num_batch_threads once, for the shared pool (the global file)."""
    threads = int(_suggest(trial, "num_batch_threads", space.num_batch_threads, high_default=cores))
    per_model = []
    for name in space.per_model_batching:
        per_model.append((name, BatchingParameters(
            max_batch_size=int(_suggest(trial, f"{name}.max_batch_size", space.max_batch_size)),
            batch_timeout_micros=int(
                _suggest(trial, f"{name}.batch_timeout_micros", space.batch_timeout_micros)
            ),
            max_enqueued_batches=int(
                _suggest(trial, f"{name}.max_enqueued_batches", space.max_enqueued_batches)
            ),
        )))  # fmt: skip
    intra, inter, users = _session_and_load(trial, space)
    return TrialConfig(
        batching=BatchingParameters(num_batch_threads=threads, thread_pool_name=SHARED_POOL),
        intra_op_parallelism=intra,
        inter_op_parallelism=inter,
        users=users,
        per_model=tuple(per_model),
    )


EXEC_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)  # max_execution_batch_size's choices


def suggest(trial, space: SearchConfig, cores: int) -> TrialConfig:
    if space.per_model_batching:
        return suggest_per_model(trial, space, cores)
    mbs = int(_suggest(trial, "max_batch_size", space.max_batch_size))
    timeout = int(_suggest(trial, "batch_timeout_micros", space.batch_timeout_micros))
    threads = int(_suggest(trial, "num_batch_threads", space.num_batch_threads, high_default=cores))
    queue = int(_suggest(trial, "max_enqueued_batches", space.max_enqueued_batches))
    allowed: tuple[int, ...] = ()
    splitting = None
    max_exec = None
    if space.large_batch_splitting and trial.suggest_categorical(
        "enable_large_batch_splitting", [False, True]
    ):
        splitting = True
        # one fixed choice list (optuna refuses a categorical whose choices change between
        # trials, as a list cut at each trial's max_batch_size would), capped at max_batch_size
        max_exec = min(int(trial.suggest_categorical("max_execution_batch_size", EXEC_SIZES)), mbs)
    if space.allowed_batch_sizes and trial.suggest_categorical(
        "pad_to_powers_of_two", [False, True]
    ):
        top = max_exec or mbs
        allowed = tuple(s for s in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if s < top) + (
            top,
        )
    batching = BatchingParameters(
        max_batch_size=mbs,
        batch_timeout_micros=timeout,
        num_batch_threads=threads,
        max_enqueued_batches=queue,
        allowed_batch_sizes=allowed,
        enable_large_batch_splitting=splitting,
        max_execution_batch_size=max_exec,
    )
    intra, inter, users = _session_and_load(trial, space)
    return TrialConfig(
        batching=batching, intra_op_parallelism=intra, inter_op_parallelism=inter, users=users
    )


def largest_batch_size(space: SearchConfig) -> int:
    """The largest max_batch_size the search space can run."""
    r = space.max_batch_size
    return int(max(r.choices) if r.choices else r.high or r.low or 1)


def baselines(space: SearchConfig, cores: int | None = None) -> dict[str, TrialConfig]:
    """The reference points measured first, named."""
    cores = cores or schedulable_cores()
    largest = largest_batch_size(space)
    return {
        labels.BATCHING_OFF: TrialConfig(batching=None),
        labels.GUIDE_CPU_START: TrialConfig(
            batching=BatchingParameters(
                max_batch_size=largest,
                batch_timeout_micros=0,
                num_batch_threads=cores,
                max_enqueued_batches=1_000_000,
            )
        ),
        labels.COMMONLY_COPIED: TrialConfig(
            batching=BatchingParameters(
                max_batch_size=8,
                batch_timeout_micros=0,
                num_batch_threads=8,
                max_enqueued_batches=1_000_000,
            )
        ),
    }


def params_for(cfg: TrialConfig, space: SearchConfig, cores: int) -> dict | None:
    """The Optuna parameters under which ``suggest`` returns ``cfg``, or None when ``cfg`` lies
    outside the space (batching off, a thread count above the range...). Enqueued with these
    parameters, a config informs the sampler like any trial it proposed."""
    b = cfg.batching
    if b is None or b.allowed_batch_sizes or b.enable_large_batch_splitting:
        return None
    if cfg.per_model or space.per_model_batching:  # a shared config is outside a per-model
        return None  # space; per-model configs come from the sampler only
    out: dict = {}
    pairs = [
        ("max_batch_size", space.max_batch_size, b.max_batch_size, None),
        ("batch_timeout_micros", space.batch_timeout_micros, b.batch_timeout_micros, None),
        ("num_batch_threads", space.num_batch_threads, b.num_batch_threads, cores),
        ("max_enqueued_batches", space.max_enqueued_batches, b.max_enqueued_batches, None),
        ("intra_op_parallelism", space.intra_op_parallelism, cfg.intra_op_parallelism, None),
        ("inter_op_parallelism", space.inter_op_parallelism, cfg.inter_op_parallelism, None),
    ]
    searched_users = bool(space.users.choices or space.users.low)
    if searched_users != (cfg.users is not None):
        return None
    if searched_users:
        pairs.append(("users", space.users, cfg.users, None))
    if space.large_batch_splitting:
        out["enable_large_batch_splitting"] = False
    if space.allowed_batch_sizes:
        out["pad_to_powers_of_two"] = False
    for name, r, value, high_default in pairs:
        got = _param(name, r, value, high_default)
        if got is None:
            return None
        out.update(got)
    return out


def _param(name: str, r: Range, value, high_default) -> dict | None:
    if r.choices:
        return {name: value} if value in r.choices else None
    high = r.high if r.high else high_default
    out = {}
    if r.zero:
        out[f"{name}_is_zero"] = value == 0
        if value == 0:
            return out
    if not r.low <= value <= high or (r.step and (value - r.low) % r.step):
        return None
    out[name] = value
    return out


def neighbours(cfg: TrialConfig, space: SearchConfig, cores: int) -> list[TrialConfig]:
    """Configs one step away from ``cfg`` in one parameter, inside the space: the next batch size
    or queue bound up or down, the timeout doubled, halved or 0, one thread more or fewer. What
    the tuner measures instead of a config the sampler proposes a second time, and where the
    simulator-guided search looks around its predicted best."""
    b = cfg.batching
    if b is None or cfg.per_model:  # per-model configs: the sampler's to vary
        return []
    out = []
    for name, high_default in (
        ("max_batch_size", None),
        ("batch_timeout_micros", None),
        ("num_batch_threads", cores),
        ("max_enqueued_batches", None),
    ):
        for v in _steps(getattr(space, name), getattr(b, name), high_default):
            nb = dataclasses.replace(b, **{name: v})
            if nb.max_execution_batch_size and nb.max_execution_batch_size > nb.max_batch_size:
                continue
            top = nb.max_execution_batch_size or nb.max_batch_size
            if nb.allowed_batch_sizes and nb.allowed_batch_sizes[-1] != top:
                continue
            out.append(dataclasses.replace(cfg, batching=nb))
    return out


def _steps(r: Range, value, high_default) -> list[int]:
    if r.choices:
        ch = sorted(r.choices)
        i = ch.index(value) if value in ch else min(range(len(ch)), key=lambda j: abs(ch[j] - value))
        return [ch[j] for j in (i - 1, i + 1) if 0 <= j < len(ch) and ch[j] != value]
    low, high = r.low or 0, (r.high if r.high else high_default) or 0
    if value == 0:
        return [int(low)] if low else []
    step = r.step or 1
    moves = (value * 2, value // 2) if r.log else (value + step, value - step)
    out = [int(v) for v in moves if low <= v <= high]
    if r.zero:
        out.append(0)
    return out


def _session_and_load(trial, space: SearchConfig) -> tuple[int, int, int | None]:
    """The knobs outside the batching file: TensorFlow's op parallelism, and the users when
    the search space varies them (None: the experiment's)."""
    intra = int(_suggest(trial, "intra_op_parallelism", space.intra_op_parallelism))
    inter = int(_suggest(trial, "inter_op_parallelism", space.inter_op_parallelism))
    vary_users = space.users.choices or space.users.low
    users = int(_suggest(trial, "users", space.users)) if vary_users else None
    return intra, inter, users
