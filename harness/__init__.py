"""Load-testing and batching-tuning harness for TensorFlow Serving."""

__version__ = "0.1.0"
