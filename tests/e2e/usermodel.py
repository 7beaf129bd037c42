"""A SavedModel the project did not export, made the way a user makes one: TensorFlow directly,
a ``tf.Module`` whose signature takes a batch of strings (DT_STRING, batch dimension free),
hashes each into buckets, embeds them and scores them with dense layers (random weights)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

# The hidden layer's 4 MB of weights make a call cost 1.1 ms for 1 row and 1.9 ms for 16
# (measured in-process): a model that gains from batching. Without it, batching off won one
# of three studies here; with it, the one study run won with batching, by 1.09x over batching
# off (the load generator's ~2,000 requests/s on one core is then the limit). The deploy
# check covers a batching-off winner too; a 2048-wide layer would show the gain more clearly.
BUCKETS, WIDTH, HIDDEN, CLASSES = 1024, 64, 1024, 4
INPUT, OUTPUT = "query", "scores"
QUERIES = [b"red running shoes", b"\xff\xd8 not utf-8 \x00 bytes", b"tf serving", b"a", b"b" * 300]


def export(base: Path, version: int = 1) -> Path:
    """Write ``base/<version>/saved_model.pb`` and return ``base`` (the model's base path)."""
    import tensorflow as tf

    module = tf.Module()
    module.embedding = tf.Variable(tf.random.stateless_normal([BUCKETS, WIDTH], seed=[1, 2]))
    module.expand = tf.Variable(tf.random.stateless_normal([WIDTH, HIDDEN], seed=[3, 4]) * 0.1)
    module.hidden = tf.Variable(tf.random.stateless_normal([HIDDEN, HIDDEN], seed=[5, 6]) * 0.03)
    module.kernel = tf.Variable(tf.random.stateless_normal([HIDDEN, CLASSES], seed=[7, 8]) * 0.03)
    module.bias = tf.Variable(tf.zeros([CLASSES]))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT)])
    def serve(query):
        ids = tf.strings.to_hash_bucket_fast(query, BUCKETS)
        hidden = tf.nn.relu(tf.gather(module.embedding, ids) @ module.expand)
        hidden = tf.nn.relu(hidden @ module.hidden)
        return {OUTPUT: tf.nn.softmax(tf.matmul(hidden, module.kernel) + module.bias)}

    module.serve = serve
    tf.saved_model.save(
        module, str(Path(base) / str(version)), signatures={"serving_default": serve}
    )
    return Path(base)


def write_payload(path: Path) -> Path:
    """A TF Serving REST request body in row form: binary strings as ``{"b64": ...}``, as TF
    Serving's REST API writes them, beside plain (UTF-8) strings."""
    rows = [
        {INPUT: {"b64": base64.b64encode(q).decode()}} if not q.isascii() else {INPUT: q.decode()}
        for q in QUERIES
    ]
    Path(path).write_text(json.dumps({"signature_name": "serving_default", "instances": rows}))
    return Path(path)


def rest_body(rows: int) -> bytes:
    """A REST predict body of ``rows`` rows (row form: the answer is ``predictions``, one per
    row) for requests sent by hand."""
    values = [{"b64": base64.b64encode(QUERIES[i % len(QUERIES)]).decode()} for i in range(rows)]
    return json.dumps({"instances": [{INPUT: v} for v in values]}).encode()
