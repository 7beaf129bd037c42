"""Outcome codes for recorded requests, as the load users need them: gRPC status numbers, plus
transport failures (the codes and their names live in harness.codes).

REST answers are mapped back to the gRPC code that TF Serving's HTTP mapping came from, so both
protocols are counted the same way.
"""

from __future__ import annotations

import re

from harness import codes
from harness.codes import HTTP_STATUS

OK, TRANSPORT, OTHER = codes.OK, codes.TRANSPORT, codes.OTHER
NAMES, CODES = codes.OUTCOME_NAMES, codes.OUTCOME_CODES

# HTTP back to the gRPC code TF Serving mapped from; where several map to one (400), the
# commonest: INVALID_ARGUMENT.
HTTP_TO_CODE = {}
for _name, _http in HTTP_STATUS.items():
    HTTP_TO_CODE.setdefault(_http, CODES[_name])
HTTP_TO_CODE[500] = CODES["INTERNAL"]

TASK_SIZE = re.compile(r"Task size (\d+) is larger than maximum (?:input )?batch size (\d+)")


def from_http(status: int) -> int:
    return HTTP_TO_CODE.get(status, OTHER)


def oversize(message: str) -> tuple[int, int] | None:
    """(task size, limit) from an INVALID_ARGUMENT "Task size N is larger than ..." message."""
    m = TASK_SIZE.search(message or "")
    return (int(m.group(1)), int(m.group(2))) if m else None
