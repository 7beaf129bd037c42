"""One module per ``harness`` command, each with ``register(sub)`` (its sub-parser, flags and
handler) and the handler itself. Only the standard library and the foundations are imported at
the top of these modules; everything heavier is imported by the handler when it runs."""
