"""Is a running server still answering? A hung server (stopped, deadlocked, swapped out, a frozen
container) does not exit, so an exit check alone would let a trial wait on it for ever.

``Watchdog.check()`` is cheap to call often: at most once a second it asks the server for its
model status (the REST status call, which never waits on the batcher or a model run). When no
answer has come for ``hang_after_s`` seconds it raises ServerError, with the tail of the server's
log when given a way to read it, and the trial fails.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from harness.endpoint import log_tail
from harness.errors import ServerError

HANG_AFTER_S = 15.0  # a server silent this long is hung (a busy one still answers status calls)
PROBE_EVERY_S = 1.0
PROBE_TIMEOUT_S = 2.0


class Watchdog:
    def __init__(self, rest_url: str, model_name: str, hang_after_s: float | None = None) -> None:
        self.url = f"{rest_url}/v1/models/{model_name}"
        if hang_after_s is None:  # the environment may shorten it (the fault tests do)
            hang_after_s = float(os.environ.get("TFS_HARNESS_HANG_AFTER_S", HANG_AFTER_S))
        self.hang_after_s = hang_after_s
        self._last_ok = time.monotonic()
        self._last_probe = 0.0
        self._last_error = ""

    def check(self, logs: Callable[[], str] | None = None) -> None:
        """Raise ServerError when the server has not answered for ``hang_after_s`` seconds
        (``logs``: the server's log so far, whose tail goes into the message)."""
        now = time.monotonic()
        if now - self._last_probe < PROBE_EVERY_S:
            return
        self._last_probe = now
        try:
            with urllib.request.urlopen(self.url, timeout=PROBE_TIMEOUT_S) as r:
                r.read()
            self._last_ok = time.monotonic()
            return
        except urllib.error.HTTPError:  # an answer, even an error, means it is alive
            self._last_ok = time.monotonic()
            return
        except (OSError, ValueError) as exc:
            self._last_error = str(getattr(exc, "reason", exc))
        silent = time.monotonic() - self._last_ok
        if silent > self.hang_after_s:
            tail = f"\n{log_tail(logs())}" if logs is not None else ""
            raise ServerError(
                f"server stopped answering: no reply to a status request for {silent:.0f}s "
                f"({self._last_error}){tail}",
                hint="the server hangs (stopped, deadlocked or starved); the trial is failed",
            )
