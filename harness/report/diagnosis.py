"""Why a trial's requests were rejected, and what to change: the sentences of the report's
"Rejections" table, one cause and one fix per status code.

Pure: counts and settings in, sentences out (``tables.rejections`` gathers them per trial), so
the prose is tested on its own (tests/report/test_diagnosis.py). The causes are TF Serving's:
INVALID_ARGUMENT for a request larger than max_batch_size without splitting, UNAVAILABLE for a
full batch queue, RESOURCE_EXHAUSTED for requests past their deadline when batched.
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
