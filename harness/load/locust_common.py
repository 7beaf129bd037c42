"""What the gRPC and REST Locust users share: options, closed/open loop, per-request recording.

Imported only inside Locust processes (``import locust`` monkey-patches the interpreter with
gevent). No TensorFlow: requests are built by ``harness.load.wire`` from the model's own
signature. Options are Locust custom arguments, so they work on the command line, as
``LOCUST_...`` environment variables and in Locust's web UI.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import gevent
import numpy as np
from locust import events
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner
from locust.user.task import LOCUST_STATE_STOPPING

from harness.config import Arrivals, parse_size_mix, parse_traffic
from harness.errors import HarnessError
from harness.load import distributed, payloads, status
from harness.load.recorder import Recorder


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument(
        "--model-name",
        type=str,
        default="default",
        env_var="LOCUST_MODEL_NAME",
        help="model to send Predict requests to",
    )
    parser.add_argument(
        "--traffic",
        type=str,
        default="",
        env_var="LOCUST_TRAFFIC",
        help="several models: the share of requests each gets, model:weight,... such as "
        "ranker:70,mlp:30 (default: every request to --model-name)",
    )
    parser.add_argument(
        "--signature-name", type=str, default="serving_default", env_var="LOCUST_SIGNATURE_NAME"
    )
    parser.add_argument(
        "--request-sizes",
        type=str,
        default="1",
        env_var="LOCUST_REQUEST_SIZES",
        help="rows per request: one size, or a mix size:weight,... such as 1:50,4:30,16:20",
    )
    parser.add_argument(
        "--payload",
        type=str,
        default="",
        env_var="LOCUST_PAYLOAD",
        help="example requests to draw rows from: a TF Serving REST request body, a directory "
        "of them, or an .npz (default: random values from the signature)",
    )
    parser.add_argument(
        "--input-shapes",
        type=str,
        default="",
        env_var="LOCUST_INPUT_SHAPES",
        help="random values: row shapes of inputs with dynamic dimensions, "
        "NAME=D1,D2,...;NAME2=...",
    )
    parser.add_argument(
        "--arrival-rate",
        type=float,
        default=0.0,
        env_var="LOCUST_ARRIVAL_RATE",
        help="open loop: total requests/s across all users (0: closed loop, no wait)",
    )
    parser.add_argument(
        "--arrivals",
        choices=[a.value for a in Arrivals],
        default=Arrivals.POISSON.value,
        env_var="LOCUST_ARRIVALS",
        help="open-loop inter-arrival times",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        env_var="LOCUST_REQUEST_TIMEOUT",
        help="seconds before a request counts as DEADLINE_EXCEEDED",
    )
    parser.add_argument(
        "--record-dir",
        type=str,
        default="",
        env_var="LOCUST_RECORD_DIR",
        help="write every request's latency (us), status and size here (for the harness)",
    )


_recorder: Recorder | None = None
_collector: distributed.Collector | None = None
_shipped = 0


def recorder(environment) -> Recorder:
    """This process's recorder. A worker keeps rows in memory and ships them to the master."""
    global _recorder
    if _recorder is None:
        ships = isinstance(environment.runner, WorkerRunner)
        _recorder = Recorder(None if ships else (environment.parsed_options.record_dir or None))
        if not ships:

            def flush_loop():
                while True:
                    gevent.sleep(1.0)
                    _recorder.flush()

            gevent.spawn(flush_loop)
    return _recorder


def _ship(environment) -> None:
    """Worker: send the rows recorded since the last call (possibly none: it says "alive")."""
    global _shipped
    if not getattr(environment.parsed_options, "record_dir", ""):
        return  # the master keeps no record (a plain Locust run by hand)
    arrays, oversize = recorder(environment).take()
    t = os.times()
    _shipped += 1
    try:
        environment.runner.send_message(
            distributed.MESSAGE, distributed.pack(_shipped, arrays, oversize, t.user + t.system)
        )
    except Exception as exc:  # the master is gone; the harness sees the gap
        logging.warning("could not ship samples to the master: %s", exc)


@events.init.add_listener
def _distributed_init(environment, **_kw) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):

        def ship_loop():
            while True:
                gevent.sleep(1.0)
                _ship(environment)

        gevent.spawn(ship_loop)
    elif isinstance(runner, MasterRunner):
        _master_init(environment, runner)


def _master_init(environment, runner) -> None:
    global _collector
    o = environment.parsed_options
    if o is not None and o.record_dir:
        _collector = distributed.Collector(o.record_dir, expected=o.expect_workers)

    def on_samples(environment, msg, **_kw):
        if _collector is not None:
            _collector.receive(msg.node_id, msg.data, runner.get_worker_index(msg.node_id))

    runner.register_message(distributed.MESSAGE, on_samples)

    def on_error(environment, msg, **_kw):
        _stop_with(environment, msg.data)

    runner.register_message(ERROR_MESSAGE, on_error)

    @environment.events.worker_connect.add_listener
    def _joined(client_id, **_kw):
        if _collector is not None:
            _collector.joined(client_id, runner.get_worker_index(client_id))

    def watch():
        while True:
            gevent.sleep(0.5)
            if _collector is None:
                return
            for node in list(_collector.workers):
                client = runner.clients.get(node)
                if client is None:
                    _collector.lost(node, "it quit or was removed by the master")
                elif client.state == "missing":
                    _collector.lost(node, "it missed its heartbeats")

    gevent.spawn(watch)


@events.test_start.add_listener
def _total_users(environment, **_kw) -> None:
    # Workers only know their own user count; the open-loop rate is shared over all users, so
    # the master hands the total on with the custom options it sends to every worker.
    if isinstance(environment.runner, MasterRunner) and environment.parsed_options is not None:
        environment.parsed_options.total_users = environment.runner.target_user_count


@events.test_stop.add_listener
@events.quitting.add_listener
def _final_flush(environment, **_kw) -> None:
    """At the test's end and at exit: a worker ships its last samples, a lone process writes them."""
    if isinstance(environment.runner, WorkerRunner):
        _ship(environment)
    elif _recorder is not None:
        _recorder.flush()


_pools: dict[tuple, payloads.PayloadPool] = {}
ERROR_MESSAGE = "harness_error"  # a worker that cannot build requests tells the master
_stopping = False


def _stop_with(environment, message: str) -> None:
    """Print ``error: ...`` once and stop this Locust process (a worker tells its master,
    which stops the run) with exit code 2."""
    global _stopping
    if _stopping:
        return
    _stopping = True
    print(f"error: {message}", file=sys.stderr, flush=True)
    environment.process_exit_code = 2
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        try:
            runner.send_message(ERROR_MESSAGE, message)
        except Exception as exc:  # the master is gone: it sees this worker go too
            logging.warning("could not tell the master: %s", exc)
    if runner is not None:
        gevent.spawn_later(0.1, runner.quit)


def _pool(o, user, model: str) -> payloads.PayloadPool:
    """The pool of request bodies for ``model`` with these options, built once per process."""
    key = (
        type(user).__name__,
        user.host,
        model,
        o.signature_name,
        o.request_sizes,
        o.payload,
        o.input_shapes,
    )
    if key not in _pools:
        mix = parse_size_mix(o.request_sizes)
        specs = user._signature(o, model)
        shapes = [s for s in o.input_shapes.split(";") if s.strip()]
        source = payloads.request_source(specs, o.payload, shapes, o.signature_name)
        # one seed for every protocol: gRPC and REST pools draw the same rows
        _pools[key] = payloads.PayloadPool(source, mix, user._encoder(o, model), seed=0)
    return _pools[key]


class _PredictUser:
    """What both protocols share: the payload pool, closed/open loop, recording, Locust events."""

    request_type = "predict"
    abstract = True

    def _setup(self) -> None:
        o = self.environment.parsed_options
        self.model_name = o.model_name
        self.rec = recorder(self.environment)
        try:
            # several models: each request goes to one drawn by the split; its index in the
            # split is recorded with the request, so figures can be computed per model
            split = parse_traffic(o.traffic) if getattr(o, "traffic", "") else [(o.model_name, 1.0)]
            self.models = [name for name, _ in split]
            self.bounds = np.cumsum([share for _, share in split])
            self.pools = [_pool(o, self, name) for name in self.models]
        except HarnessError as exc:
            # the run stops with the one error line; the user ends at its first task, where
            # Locust takes StopUser quietly (from on_start it logs a traceback per user)
            _stop_with(self.environment, str(exc))
            self.pools = None
        self.rng = np.random.default_rng()

    def _send_recorded(self, intended: float) -> None:
        model = 0
        if len(self.models) > 1:  # the split's cumulative shares, one uniform draw
            model = min(int(np.searchsorted(self.bounds, self.rng.random(), side="right")), len(self.models) - 1)
        size, body = self.pools[model].pick()
        sent = time.time()
        code, detail, length = self._send(body, self.models[model])
        done = time.time()
        latency_us = (done - intended) * 1e6
        self.rec.add(intended, latency_us, code, size, (sent - intended) * 1e6, model)
        if code == status.CODES["INVALID_ARGUMENT"]:
            over = status.oversize(detail)
            if over:
                self.rec.oversize[over] += 1
        exc = (
            None
            if code == status.OK
            else RuntimeError(f"{status.NAMES.get(code, code)}: {detail}"[:300])
        )
        self.environment.events.request.fire(
            request_type=self.request_type,
            name=f"Predict[{size}]" if len(self.models) == 1 else f"{self.models[model]}[{size}]",
            response_time=latency_us / 1000.0,
            response_length=length,
            exception=exc,
            context={},
        )

    def _predict(self) -> None:
        if self.pools is None:  # _setup failed and has said why
            raise StopUser()
        o = self.environment.parsed_options
        if o.arrival_rate <= 0:
            self._send_recorded(time.time())  # closed loop: the next request follows the answer
            return
        self._open_loop(o)

    def _open_loop(self, o) -> None:
        users = getattr(o, "total_users", 0) or getattr(
            self.environment.runner, "target_user_count", 1
        )
        users = max(1, users or 1)
        rate = o.arrival_rate / users
        next_t = time.time()
        while self._state != LOCUST_STATE_STOPPING:  # stopped: end the task, not wait it out
            gap = self.rng.exponential(1.0 / rate) if o.arrivals == Arrivals.POISSON else 1.0 / rate
            next_t += gap
            delay = next_t - time.time()
            if delay > 0:
                gevent.sleep(delay)
            gevent.spawn(self._send_recorded, next_t)
