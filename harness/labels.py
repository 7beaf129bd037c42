"""Names that several layers read back from a study's files: the baselines' labels and the
tuned parameters' column names (standard library only).

A baseline's label is a lookup key: the tuner writes it into each baseline trial (Optuna's
storage, ``trials.csv``), the winner step finds the references by it, and the report picks the
baselines out by it. Studies written before the rename carry the old label (results/published/
has some); :func:`baseline_label` maps it when a study is read back.

Also here: the name of the server a study measured (:func:`server_label`, from
environment.json's ``server`` entry) and the exit codes with their meanings, which the command
line returns and summary.json states.
"""

from __future__ import annotations

BATCHING_OFF = "batching off"
GUIDE_CPU_START = "batching guide CPU start"
COMMONLY_COPIED = "commonly copied config"
USER_BASELINE = "your baseline"  # harness tune --baseline FILE
# harness tune --guide-procedure: the config the batching guide's procedure ends on (its steps
# are labelled guide_step_label(step) in trials.csv)
GUIDE_PROCEDURE = "batching guide procedure"
BASELINES = (BATCHING_OFF, GUIDE_CPU_START, COMMONLY_COPIED, USER_BASELINE)
# The baselines re-measured beside the winner, in the order the headline states its gains.
REFERENCES = (BATCHING_OFF, GUIDE_CPU_START, GUIDE_PROCEDURE, USER_BASELINE)
# How the headline names each reference in a sentence ("1.20x the throughput of ...").
REFERENCE_NAMES = {
    BATCHING_OFF: "batching off",
    GUIDE_CPU_START: "the batching guide's CPU start",
    GUIDE_PROCEDURE: "the batching guide's procedure",
    USER_BASELINE: "your baseline",
}


def guide_step_label(step: str) -> str:
    """The label of one step of the guide's procedure, as trials.csv's baseline column has it."""
    return f"{GUIDE_PROCEDURE}: {step}"


def is_guide_step(label) -> bool:
    return isinstance(label, str) and label.startswith(f"{GUIDE_PROCEDURE}: ")

# Older studies named batching off after TF Serving's default, though the reference server's
# figures were often what stood behind it.
_FORMER = {"batching off (TF Serving default)": BATCHING_OFF}


def baseline_label(label):
    """The current label for ``label`` as found in a study's files (anything else unchanged)."""
    return _FORMER.get(label, label) if isinstance(label, str) else label


# The tuned parameters, as trials.csv names its columns (TrialConfig.as_dict's keys).
PARAMS = (
    "enable_batching",
    "max_batch_size",
    "batch_timeout_micros",
    "num_batch_threads",
    "max_enqueued_batches",
    "allowed_batch_sizes",
    "enable_large_batch_splitting",
    "max_execution_batch_size",
    "intra_op_parallelism",
    "inter_op_parallelism",
    "users",
)


def server_label(server) -> str:
    """The server a study measured, as a sentence names it, from environment.json's ``server``
    entry: its ``name`` when recorded, else made from the backend, binary, image and version."""
    if not isinstance(server, dict) or not server:
        return "an unrecorded server"
    if server.get("name"):
        return str(server["name"])
    backend = server.get("backend")
    version = str(server.get("version") or "")
    known = version and version != "unknown"
    if backend == "docker":
        image = server.get("image") or "an unnamed image"
        return f"the image {image}" + (f" ({version})" if known else "")
    if backend == "process":
        if server.get("binary") == "reference" or version.startswith("reference server"):
            return "the reference server"
        binary = server.get("binary") or "tensorflow_model_server"
        return f"{binary}" + (f" ({version})" if known else "")
    if backend == "external":
        return f"the server at {server.get('grpc_target') or server.get('rest_url') or '?'}"
    return str(backend or "an unrecorded server")


# -- exit codes ---------------------------------------------------------------------------------

EXIT_OK = 0  # tune: a config met the SLO; run: the run met --slo-p99-ms (or none was given)
EXIT_CRASH = 1  # an unexpected failure: Python's own code for an uncaught exception
EXIT_USAGE = 2  # a usage, bad-input or start-up error (argparse's code for usage errors)
EXIT_SLO_MISSED = 3  # tune: no config met the SLO; run: the run missed --slo-p99-ms
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM (128 + SIGINT, as shells report it)

EXIT_MEANINGS = {
    EXIT_OK: "a config met the SLO (run: the run met --slo-p99-ms, or none was given)",
    EXIT_CRASH: "an unexpected failure (a Python traceback)",
    EXIT_USAGE: "a usage, bad-input or start-up error (tune: also when every trial failed)",
    EXIT_SLO_MISSED: "no config met the SLO (run: the run missed --slo-p99-ms)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C, SIGTERM): finished trials are kept, rerun to resume",
}


def exit_table() -> str:
    """The exit codes as the help text and the README list them."""
    return "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_MEANINGS.items())
