"""The reference server: TF Serving's gRPC and REST API and batch scheduler, in Python."""
