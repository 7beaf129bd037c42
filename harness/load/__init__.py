"""Load generation: payloads, Locust users, per-request recording, measurement runs."""
