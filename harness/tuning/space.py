"""The search space: Optuna suggestions -> batching parameters, thread counts and workload.

Also the baselines every study measures first: TF Serving's default (batching off), the CPU
starting point from TF Serving's batching guide, and the config copied around the internet.
"""

from __future__ import annotations

import dataclasses

from harness.batching import BatchingParameters, schedulable_cores
from harness.config import Range, SearchConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrialConfig:
    """Everything one trial runs with."""

    batching: BatchingParameters | None  # None: --enable_batching off
    intra_op_parallelism: int = 0
    inter_op_parallelism: int = 0
    users: int | None = None  # None: the experiment's load.users

    def describe(self) -> str:
        if self.batching is None:
            text = "batching off"
        else:
            b = self.batching
            text = (
                f"mbs={b.max_batch_size} t={b.batch_timeout_micros}us thr={b.num_batch_threads} "
                f"q={b.max_enqueued_batches}"
            )
            if b.allowed_batch_sizes:
                text += f" allowed={list(b.allowed_batch_sizes)}"
            if b.enable_large_batch_splitting:
                text += f" split@{b.max_execution_batch_size}"
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
        )


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


def suggest(trial, space: SearchConfig, cores: int) -> TrialConfig:
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
        exec_choices = [s for s in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if s <= mbs] or [mbs]
        max_exec = int(trial.suggest_categorical("max_execution_batch_size", exec_choices))
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
    intra = int(_suggest(trial, "intra_op_parallelism", space.intra_op_parallelism))
    inter = int(_suggest(trial, "inter_op_parallelism", space.inter_op_parallelism))
    users = (
        int(_suggest(trial, "users", space.users))
        if space.users.choices or space.users.low
        else None
    )
    return TrialConfig(
        batching=batching, intra_op_parallelism=intra, inter_op_parallelism=inter, users=users
    )


def baselines(space: SearchConfig, cores: int | None = None) -> dict[str, TrialConfig]:
    """The reference points measured first, named."""
    cores = cores or schedulable_cores()
    largest = (
        max(space.max_batch_size.choices)
        if space.max_batch_size.choices
        else int(space.max_batch_size.high)
    )
    return {
        "batching off (TF Serving default)": TrialConfig(batching=None),
        "batching guide CPU start": TrialConfig(
            batching=BatchingParameters(
                max_batch_size=largest,
                batch_timeout_micros=0,
                num_batch_threads=cores,
                max_enqueued_batches=1_000_000,
            )
        ),
        "commonly copied config": TrialConfig(
            batching=BatchingParameters(
                max_batch_size=8,
                batch_timeout_micros=0,
                num_batch_threads=8,
                max_enqueued_batches=1_000_000,
            )
        ),
    }
