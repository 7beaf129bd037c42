"""Prometheus metrics with TF Serving's names, label sets and histogram buckets.

TF Serving exports its monitoring metrics with every "/" turned into ":", so
``/tensorflow/serving/request_count`` becomes ``:tensorflow:serving:request_count``. Histograms
("samplers") use TF's exponential buckets; their ``le`` bounds are printed as TF prints them.
"""

from __future__ import annotations

import bisect
import threading


def exponential_buckets(scale: float, growth: float, count: int) -> list[float]:
    return [scale * growth**i for i in range(count)]


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    parts = []
    for n, v in zip(names, values):
        v = str(v).replace("\\", "\\\\").replace('"', '\\"')
        parts.append(f'{n}="{v}"')
    return ",".join(parts)


class Counter:
    def __init__(self, name: str, help_: str, labels: tuple[str, ...] = ()) -> None:
        self.name, self.help, self.label_names = name, help_, labels
        self._values: dict[tuple, int] = {}
        self._lock = threading.Lock()

    def inc(self, *labels: str, amount: int = 1) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0) + amount

    def render(self) -> list[str]:
        lines = [f"# TYPE {self.name} counter"]
        for key, v in sorted(self._values.items()):
            lines.append(f"{self.name}{{{_labels(self.label_names, key)}}} {v}")
        return lines


class Histogram:
    def __init__(
        self, name: str, help_: str, buckets: list[float], labels: tuple[str, ...] = ()
    ) -> None:
        self.name, self.help, self.label_names = name, help_, labels
        self.bounds = list(buckets)
        self._cells: dict[tuple, list] = {}  # labels -> [bucket counts..., sum]
        self._lock = threading.Lock()

    def observe(self, value: float, *labels: str) -> None:
        i = bisect.bisect_left(self.bounds, value)
        with self._lock:
            cell = self._cells.get(labels)
            if cell is None:
                cell = self._cells[labels] = [0] * (len(self.bounds) + 1) + [0.0]
            cell[i] += 1
            cell[-1] += value

    def render(self) -> list[str]:
        lines = [f"# TYPE {self.name} histogram"]
        for key, cell in sorted(self._cells.items()):
            lab = _labels(self.label_names, key)
            prefix = f"{self.name}_bucket{{{lab}{',' if lab else ''}"
            total = 0
            for i, bound in enumerate(self.bounds):
                total += cell[i]
                lines.append(f'{prefix}le="{_fmt(bound)}"}} {total}')
            total += cell[len(self.bounds)]
            lines.append(f'{prefix}le="+Inf"}} {total}')
            lines.append(f"{self.name}_sum{{{lab}}} {_fmt(cell[-1])}")
            lines.append(f"{self.name}_count{{{lab}}} {total}")
        return lines


class Gauge(Counter):
    def set(self, value: int, *labels: str) -> None:
        with self._lock:
            self._values[labels] = value

    def render(self) -> list[str]:
        lines = super().render()
        lines[0] = f"# TYPE {self.name} gauge"
        return lines


class ServingMetrics:
    """The metrics the reference server keeps, named as TF Serving exports them."""

    def __init__(self) -> None:
        latency = exponential_buckets(10, 1.8, 33)
        sizes = exponential_buckets(1, 2, 14)
        self.request_count = Counter(
            ":tensorflow:serving:request_count",
            "The total number of requests.",
            ("model_name", "status"),
        )
        self.request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            latency,
            ("model_name", "API", "entrypoint"),
        )
        self.runtime_latency = Histogram(
            ":tensorflow:serving:runtime_latency",
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            latency,
            ("model_name", "API", "runtime"),
        )
        self.queuing_latency = Histogram(
            ":tensorflow:serving:batching_session:queuing_latency",
            "Distribution of wall time spent (in microseconds) in queuing",
            exponential_buckets(100, 1.2, 52),
            ("thread_pool_name",),
        )
        self.input_batch_size = Histogram(
            ":tensorflow:serving:batching_session:input_batch_size",
            "Tracks the batch size distribution on the inputs.",
            sizes,
        )
        self.processed_batch_size = Histogram(
            ":tensorflow:serving:batching_session:processed_batch_size",
            "Tracks the batch size distribution on processing.",
            sizes,
        )
        self.padding_size = Histogram(
            ":tensorflow:serving:batching_session:padding_size",
            "Tracks the padding size distribution on batches.",
            sizes,
            ("execution_batch_size",),
        )
        # Reference server only: TF Serving's batch-size histograms above carry no model label
        # (one series summed over every model), so a server of several models cannot be read
        # per model from them; these two can. Same buckets and values, plus model_name.
        self.model_input_batch_size = Histogram(
            ":refserver:batching_session:input_batch_size",
            "Batch sizes before padding, per model. Reference server only.",
            sizes,
            ("model_name",),
        )
        self.model_processed_batch_size = Histogram(
            ":refserver:batching_session:processed_batch_size",
            "Batch sizes as run (after padding), per model. Reference server only.",
            sizes,
            ("model_name",),
        )
        self.wrapped_run_count = Counter(
            ":tensorflow:serving:batching_session:wrapped_run_count",
            "Total count of run calls on the wrapped session",
        )
        self.load_latency = Histogram(
            ":tensorflow:cc:saved_model:load_latency",
            "Latency in microseconds for SavedModels that were successfully loaded.",
            exponential_buckets(10, 1.8, 33),
            ("model_path",),
        )
        self.model_state = Gauge(
            ":tensorflow:serving:model_version_state",
            "Numeric state of each model version (30 = AVAILABLE). Reference server only.",
            ("model_name", "version"),
        )

    def render(self) -> str:
        lines: list[str] = []
        for metric in (
            self.request_count,
            self.request_latency,
            self.runtime_latency,
            self.queuing_latency,
            self.input_batch_size,
            self.processed_batch_size,
            self.padding_size,
            self.wrapped_run_count,
            self.model_input_batch_size,
            self.model_processed_batch_size,
            self.load_latency,
            self.model_state,
        ):
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
