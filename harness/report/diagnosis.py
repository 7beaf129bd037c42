"""The report's explanations: why a trial's requests were rejected and what to change (the
"Rejections" table, one cause and one fix per status code), and why a trial has no figures of
its own or was picked (the "reason" column of "Every trial").

Pure: counts and settings in, sentences out (``tables.rejections`` and the report's trial table
gather them per trial), so the prose is tested on its own (tests/report/test_diagnosis.py). The
causes are TF Serving's: INVALID_ARGUMENT for a request larger than max_batch_size without
splitting, UNAVAILABLE for a full batch queue, RESOURCE_EXHAUSTED for requests past their
deadline when batched.
"""

from __future__ import annotations


def rejection_causes(
    *,
    invalid: int,
    unavailable: int,
    exhausted: int,
    oversize_sizes: list[int],
    max_batch_size: int | None,
    max_enqueued_batches: int | None,
    largest_request: int | None,
) -> tuple[list[str], list[str]]:
    """(causes, fixes) for a trial's rejection counts. ``oversize_sizes``: the request sizes the
    server refused as too large (from the load generator's record); ``largest_request``: the
    largest size in the experiment's mix, the fix's target when the record has none."""
    causes, fixes = [], []
    mbs = max_batch_size
    if invalid:
        causes.append(
            f"{invalid} INVALID_ARGUMENT: requests of "
            f"{', '.join(map(str, oversize_sizes)) or 'some'} items "
            f"are larger than max_batch_size={mbs}"
        )
        need = max(oversize_sizes) if oversize_sizes else largest_request
        fixes.append(
            f"raise max_batch_size to at least {need}, or set enable_large_batch_splitting "
            f"with max_execution_batch_size={mbs}"
            if need
            else "raise max_batch_size above the largest request, or enable large batch splitting"
        )
    if unavailable:
        causes.append(
            f"{unavailable} UNAVAILABLE: the batch queue "
            f"(max_enqueued_batches={max_enqueued_batches}) was full"
        )
        fixes.append(
            "raise max_enqueued_batches, or max_batch_size / num_batch_threads so batches drain faster"
        )
    if exhausted:
        causes.append(
            f"{exhausted} RESOURCE_EXHAUSTED: requests were past their deadline when batched"
        )
        fixes.append("lower batch_timeout_micros, or give the server more CPU")
    return causes, fixes


def trial_reason(*, duplicate_of: int | None, neighbour_of: int | None, fail_reason: str) -> str:
    """Why a trial's row reads as it does: a repeated proposal's figures are copied from the
    first trial of its config; a neighbour was measured instead of a repeat; a failure says why."""
    if duplicate_of is not None:
        return f"same config as trial {duplicate_of}: not measured again, figures copied"
    reason = fail_reason
    if neighbour_of is not None:
        picked = f"a neighbour of trial {neighbour_of}, measured instead of a repeated proposal"
        reason = f"{picked}; {reason}" if reason else picked
    return reason
