"""Export the demo models as SavedModels with a ``serving_default`` signature.

Weights are random (seeded), nothing is downloaded. The batch dimension is None, so TF Serving
can batch requests together.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness import atomic
from harness.errors import ModelError
from harness.models.catalog import JPEG_CLASSES, JPEG_SIZE, MODELS


def _dense_stack(tf, rng, sizes: list[int]):
    weights = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        scale = (2.0 / fan_in) ** 0.5
        w = tf.Variable(rng.normal([fan_in, fan_out], stddev=scale), name=f"w{len(weights)}")
        b = tf.Variable(tf.zeros([fan_out]), name=f"b{len(weights)}")
        weights.append((w, b))
    return weights


def _mlp_module(tf, info, hidden: list[int], out_dim: int, final):
    rng = tf.random.Generator.from_seed(7)
    module = tf.Module()
    module.layers = _dense_stack(tf, rng, [info.input_shape[0], *hidden, out_dim])

    @tf.function(
        input_signature=[
            tf.TensorSpec(shape=[None, *info.input_shape], dtype=tf.float32, name=info.input_name)
        ]
    )
    def serve(x):
        h = x
        for i, (w, b) in enumerate(module.layers):
            h = tf.matmul(h, w) + b
            h = tf.nn.relu(h) if i < len(module.layers) - 1 else final(h)
        return {info.output_name: h}

    module.serve = serve
    return module, serve


def _keras_archive(tf, info, builder):
    """A Keras application wrapped in Keras' export archive, which tracks every variable
    (batch-norm statistics included) so the SavedModel restores completely in a TF1 session."""
    import keras

    keras.utils.set_random_seed(7)
    model = builder(weights=None, input_shape=info.input_shape, classes=1000)
    archive = keras.export.ExportArchive()
    archive.track(model)

    @tf.function(
        input_signature=[
            tf.TensorSpec(shape=[None, *info.input_shape], dtype=tf.float32, name=info.input_name)
        ]
    )
    def serve(x):
        return {info.output_name: model(x, training=False)}

    archive.add_endpoint("serving_default", serve)
    return archive, serve


def _jpeg_module(tf, info):
    """Encoded JPEGs in, scores out, as TF Serving's resnet export takes images: each string is
    decoded and resized inside the graph (so images of any size may come in one request), then
    two strided convolutions, global pooling and a dense layer."""
    rng = tf.random.Generator.from_seed(7)
    module = tf.Module()
    module.filters = [
        tf.Variable(rng.normal(shape, stddev=(2.0 / (9 * shape[2])) ** 0.5), name=f"conv{i}")
        for i, shape in enumerate(([3, 3, 3, 16], [3, 3, 16, 32]))
    ]
    module.dense = tf.Variable(rng.normal([32, JPEG_CLASSES], stddev=0.25), name="dense")
    module.bias = tf.Variable(tf.zeros([JPEG_CLASSES]), name="bias")
    pixels = tf.TensorSpec([JPEG_SIZE, JPEG_SIZE, 3], tf.float32)

    def decode(data):
        image = tf.io.decode_jpeg(data, channels=3)
        return tf.image.resize(image, [JPEG_SIZE, JPEG_SIZE]) / 255.0

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=info.input_name)])
    def serve(image_bytes):
        h = tf.map_fn(decode, image_bytes, fn_output_signature=pixels)
        for w in module.filters:
            h = tf.nn.relu(tf.nn.conv2d(h, w, strides=2, padding="SAME"))
        h = tf.reduce_mean(h, axis=[1, 2])
        return {info.output_name: tf.nn.softmax(tf.matmul(h, module.dense) + module.bias)}

    module.serve = serve
    return module, serve


def build(name: str):
    """The tf.Module and its serving function for a demo model."""
    import tensorflow as tf

    info = MODELS[name]
    if name == "mlp":
        return _mlp_module(tf, info, [32], 4, tf.identity)
    if name == "ranker":
        return _mlp_module(tf, info, [2048, 2048, 2048, 2048], 1, tf.sigmoid)
    if name == "image_jpeg":
        return _jpeg_module(tf, info)
    import keras

    if name == "mobilenet_v2":
        return _keras_archive(tf, info, keras.applications.MobileNetV2)
    if name == "resnet50":
        return _keras_archive(tf, info, keras.applications.ResNet50)
    raise AssertionError(name)


def export(
    name: str, output: str | os.PathLike, version: int = 1, *, overwrite: bool = False
) -> Path:
    """Write demo model ``name`` to ``output/<version>/``; returns that directory.

    The SavedModel is written to a temporary directory beside the target and renamed into
    place, so a server polling ``output`` never sees half a model.
    """
    if name not in MODELS:
        raise ModelError(f"unknown demo model {name!r}", hint=f"choose one of: {', '.join(MODELS)}")
    if version < 0:
        raise ModelError(f"version must be a non-negative integer, got {version}")
    base = Path(output)
    target = base / str(version)
    if target.exists() and not overwrite:
        raise ModelError(
            f"{target} already exists", hint="pass --overwrite or choose another --version"
        )
    base.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    module, serve = build(name)
    with atomic.replacing(target, directory=True) as tmp:
        if hasattr(module, "write_out"):  # a Keras export archive
            module.write_out(str(tmp), verbose=False)
        else:
            tf.saved_model.save(
                module, str(tmp), signatures={"serving_default": serve.get_concrete_function()}
            )
    return target


def ensure(name: str, base: str | os.PathLike, version: int = 1) -> Path:
    """Export the model unless a version directory already exists under ``base``."""
    base = Path(base)
    if (base / str(version) / "saved_model.pb").exists():
        return base / str(version)
    return export(name, base, version, overwrite=True)


# Sizes of the sample JPEGs (height, width): the model takes any size, so the sample mixes them.
SAMPLE_JPEG_SIZES = ((64, 64), (48, 80), (96, 72), (120, 160))


def sample_request(name: str, rows: int = 8, seed: int = 0) -> dict:
    """A TF Serving REST request body in row form with ``rows`` example inputs for demo model
    ``name`` (random values; for ``image_jpeg``, random smooth images encoded as JPEG, as
    ``{"b64": ...}`` objects): what ``--payload`` takes."""
    if name not in MODELS:
        raise ModelError(f"unknown demo model {name!r}", hint=f"choose one of: {', '.join(MODELS)}")
    if rows < 1:
        raise ModelError(f"rows must be at least 1, got {rows}")
    info = MODELS[name]
    if info.input_dtype != "string":
        import numpy as np

        values = np.random.default_rng(seed).random((rows, *info.input_shape), dtype=np.float32)
        return {"instances": np.round(values, 4).tolist()}
    import base64

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    instances = []
    for i in range(rows):
        h, w = SAMPLE_JPEG_SIZES[i % len(SAMPLE_JPEG_SIZES)]
        coarse = tf.random.stateless_uniform([h // 8, w // 8, 3], seed=[seed, i], maxval=255.0)
        image = tf.cast(tf.image.resize(coarse, [h, w]), tf.uint8)
        data = tf.io.encode_jpeg(image, quality=90).numpy()
        instances.append({"b64": base64.b64encode(data).decode()})
    return {"instances": instances}
