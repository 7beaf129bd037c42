"""``harness worker``: Locust load workers on this machine for a ``harness run``/``tune`` on
another one (docs/distributed.md)."""

from __future__ import annotations

from harness.config import LOCUST_MASTER_PORT, LoadConfig, Protocol


def register(sub) -> None:
    p = sub.add_parser(
        "worker", help="a Locust load worker for a harness run/tune on another machine"
    )
    p.add_argument("--master-host", required=True, help="the machine running harness run/tune")
    p.add_argument(
        "--master-port", type=int, default=LOCUST_MASTER_PORT, help="its Locust master port"
    )
    p.add_argument(
        "--protocol",
        choices=[v.value for v in Protocol],
        default=LoadConfig().protocol.value,
        help="the experiment's protocol",
    )
    p.add_argument("--processes", type=int, default=1, help="worker processes on this machine")
    p.add_argument("--cpus", help="cores for the workers, e.g. 2-7")
    p.add_argument(
        "--log-dir",
        help="where each measurement's worker log goes (default: a new temporary folder)",
    )
    p.add_argument(
        "--once", action="store_true", help="serve one measurement, then exit (default: loop)"
    )
    p.set_defaults(func=cmd_worker)


def cmd_worker(args) -> int:
    """Keep Locust workers connected to a master: each measurement's master tells its workers
    to quit when it ends, so a new worker is started for the next one until Ctrl-C."""
    import tempfile
    import time
    from pathlib import Path

    from harness.cpus import parse_cpus
    from harness.endpoint import log_tail
    from harness.errors import ConfigError
    from harness.load.runner import worker_command
    from harness.procs import spawn, stop_group

    if args.processes < 1:
        raise ConfigError("--processes must be >= 1")
    cpus = parse_cpus(args.cpus)
    cmd = worker_command(args.protocol, args.master_host, args.master_port)
    if args.processes > 1:
        cmd += ["--processes", str(args.processes)]
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="harness-worker-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"load worker ({args.protocol}, {args.processes} process(es)): connecting to the master "
        f"at {args.master_host}:{args.master_port}; logs in {log_dir}; Ctrl-C to stop",
        flush=True,
    )
    measurements = 0
    proc = None
    try:
        while True:
            log = log_dir / f"worker-{measurements + 1}.log"
            proc = spawn(cmd, log, cpus)
            rc = proc.wait()
            measurements += 1
            print(f"worker exited with code {rc} after measurement {measurements}", flush=True)
            if rc != 0:
                print(log_tail(log.read_text(errors="replace")), flush=True)
            if args.once:
                return rc
            time.sleep(1.0)
    except KeyboardInterrupt:
        if proc is not None:
            stop_group(proc, 10)
        print("load worker stopped", flush=True)
        return 0
