"""The reference server's compiled request path (docs/native.md).

``launch`` resolves TF Serving's flags and files with the Python server's own code (the same
checks, the same messages) and replaces the process with ``harness-refserver-native``, which
loads the models through TensorFlow's C API and serves gRPC and REST without Python.
"""
