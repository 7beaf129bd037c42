"""Predict before measuring: TF Serving's batch scheduler in virtual time.

``harness.scheduler`` holds the batch-forming rules; ``kernel`` runs them in a compiled
discrete-event loop; ``model`` turns a profile and a workload into predictions; ``profile``
holds a model's measured costs.
"""
