"""Names that several layers read back from a study's files: the baselines' labels and the
tuned parameters' column names (standard library only).

A baseline's label is a lookup key: the tuner writes it into each baseline trial (Optuna's
storage, ``trials.csv``), the winner step finds batching off by it, and the report picks the
baselines out by it. Studies written before the rename carry the old label (results/published/
has some); :func:`baseline_label` maps it when a study is read back.
"""

from __future__ import annotations

BATCHING_OFF = "batching off"
GUIDE_CPU_START = "batching guide CPU start"
COMMONLY_COPIED = "commonly copied config"
BASELINES = (BATCHING_OFF, GUIDE_CPU_START, COMMONLY_COPIED)

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
