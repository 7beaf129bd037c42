"""Payloads: TF Serving request bodies, directories and .npz files read, fitted to a signature,
sampled into requests; every misfit refused in one line naming the input. No server needed."""

import base64
import json

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from harness import dtypes
from harness.config import LoadConfig, parse_size_mix
from harness.errors import ConfigError
from harness.load import payload_files, payloads, wire
from harness.load.payloads import InputSpec

JPEG_SIG = [InputSpec("image_bytes", dtypes.DT_STRING, (-1,))]
TWO = [
    InputSpec("ids", dtypes.DT_INT64, (-1, 3)),
    InputSpec("x", dtypes.DT_FLOAT, (-1, 2)),
]


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def write(tmp_path, doc, name="body.json"):
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def rows_of(tmp_path, doc, specs, sig="serving_default"):
    return payloads.request_source(specs, write(tmp_path, doc), (), sig).arrays


def test_row_form_single_input_b64_and_plain_strings(tmp_path):
    doc = {"instances": [b64(b"\xff\xd8jpeg-1"), b64(b"\x00\x01"), "plain text"]}
    got = rows_of(tmp_path, doc, JPEG_SIG)["image_bytes"]
    assert got.dtype == object and got.shape == (3,)
    assert list(got) == [b"\xff\xd8jpeg-1", b"\x00\x01", b"plain text"]
    # the same rows named in each instance, as TF Serving's row form allows
    doc = {"instances": [{"image_bytes": b64(b"a")}, {"image_bytes": b64(b"b")}]}
    assert list(rows_of(tmp_path, doc, JPEG_SIG)["image_bytes"]) == [b"a", b"b"]


def test_row_and_columnar_forms_give_the_same_typed_rows(tmp_path):
    rows = {"instances": [{"ids": [1, 2, 3], "x": [0.5, 1]}, {"ids": [4, 5, 6], "x": [2, 3.25]}]}
    cols = {"inputs": {"ids": [[1, 2, 3], [4, 5, 6]], "x": [[0.5, 1], [2, 3.25]]}}
    a, b = rows_of(tmp_path, rows, TWO), rows_of(tmp_path, cols, TWO)
    assert a["ids"].dtype == np.int64 and a["x"].dtype == np.float32  # the signature's dtypes
    for k in ("ids", "x"):
        np.testing.assert_array_equal(a[k], b[k])
    # a bare columnar value is the one input of a single-input signature
    bare = {"inputs": [b64(b"p"), b64(b"q")]}
    assert list(rows_of(tmp_path, bare, JPEG_SIG)["image_bytes"]) == [b"p", b"q"]


def test_a_directory_joins_its_files_rows_and_npz_is_read_without_pickle(tmp_path):
    d = tmp_path / "bodies"
    d.mkdir()
    write(d, {"instances": [b64(b"one")]}, "a.json")
    write(d, {"inputs": [b64(b"two"), b64(b"three")]}, "b.json")
    (d / "notes.txt").write_text("not a payload")
    got = payloads.request_source(JPEG_SIG, d).arrays["image_bytes"]
    assert list(got) == [b"one", b"two", b"three"]
    npz = tmp_path / "p.npz"
    np.savez(npz, ids=np.arange(6).reshape(2, 3), x=np.ones((2, 2)))
    got = payloads.request_source(TWO, npz).arrays
    assert got["ids"].dtype == np.int64 and got["x"].dtype == np.float32
    np.savez(npz, image_bytes=np.array([b"\xff\xd8a", b"b"]))  # numpy's bytes arrays: strings
    assert list(payloads.request_source(JPEG_SIG, npz).arrays["image_bytes"]) == [b"\xff\xd8a", b"b"]
    np.savez(npz, image_bytes=np.array([b"a", b"b"], dtype=object))
    with pytest.raises(ConfigError, match="object array, which is read only with pickle"):
        payloads.request_source(JPEG_SIG, npz)


MISFITS = [
    # (signature, body, message fragment, hint fragment)
    (TWO, {"inputs": {"ids": [[1, 2, 3]], "x": [[1, 2]], "z": [[1]]}},
     "has input 'z', which the signature does not have (its inputs: ids, x)", "name the inputs"),
    (TWO, {"inputs": {"ids": [[1, 2, 3]]}},
     "has no values for input 'x'", "every row needs a value for every input"),
    (TWO, {"inputs": {"ids": [[1, 2, 3]], "x": [["a", "b"]]}},
     "input 'x' is DT_FLOAT but the payload gives strings", "give numbers"),
    (JPEG_SIG, {"instances": [1.0, 2.0]},
     "input 'image_bytes' is DT_STRING but the payload gives numbers", '{"b64": "..."}'),
    (TWO, {"inputs": {"ids": [[1, 2, 3.5]], "x": [[1, 2]]}},
     "input 'ids' is DT_INT64 but the payload gives fractions", "whole numbers"),
    (TWO, {"inputs": {"ids": [[1, 2, 3]], "x": [[1, 2, 3]]}},
     "input 'x': dimension 1 is 3, but the signature's shape [-1, 2] fixes it at 2", "-1 is any size"),
    (TWO, {"inputs": {"ids": [[1, 2, 3]], "x": [1.0]}},
     "input 'x': a row has shape [], but the signature's shape [-1, 2] takes rows of 1 dimension",
     "first dimension of the signature is the batch"),
    (TWO, {"instances": [{"ids": [1, 2, 3], "x": [1, 2]}, {"ids": [1, 2], "x": [1, 2]}]},
     "input 'ids' is ragged", "every row of an input has the same shape"),
    (JPEG_SIG, {"instances": [b64(b"a"), [b64(b"b")]]},
     "instances is ragged", "same shape"),
    (TWO, {"inputs": {"ids": [[1, 2, 3]], "x": [[1, 2], [3, 4]]}},
     "the inputs have different numbers of rows (ids: 1, x: 2)", "same first dimension"),
    (TWO, {"instances": [[1, 2, 3]]},
     "gives values without input names, but the signature has 2 inputs (ids, x)", "name them"),
    (JPEG_SIG, {"signature_name": "other", "instances": [b64(b"a")]},
     "is for signature 'other', but the model is measured through 'serving_default'",
     "model.signature"),
    (JPEG_SIG, {"instances": [{"b64": "not base64!"}]}, "is not base64", None),
    (JPEG_SIG, {"rows": []}, 'has no "instances" or "inputs" key', "TF Serving REST request body"),
    (JPEG_SIG, [b64(b"a")], "is a JSON list, not a request body object", "instances"),
]  # fmt: skip


@pytest.mark.parametrize("specs, doc, fragment, hint", MISFITS, ids=[m[2][:40] for m in MISFITS])
def test_a_payload_that_does_not_fit_is_refused_in_one_line(tmp_path, specs, doc, fragment, hint):
    path = write(tmp_path, doc)
    with pytest.raises(ConfigError) as exc:
        payloads.request_source(specs, path)
    err = exc.value
    assert fragment in err.message and str(path) in err.message, err.message
    assert "\n" not in str(err)
    if hint:
        assert hint in (err.hint or ""), err.hint


def test_rows_of_different_shapes_across_files_are_refused(tmp_path):
    specs = [InputSpec("image", dtypes.DT_FLOAT, (-1, -1, -1, 3))]
    d = tmp_path / "d"
    d.mkdir()
    write(d, {"instances": np.zeros((1, 2, 2, 3)).tolist()}, "a.json")
    write(d, {"instances": np.zeros((1, 4, 4, 3)).tolist()}, "b.json")
    with pytest.raises(ConfigError, match=r"input 'image' has rows of shape \[2, 2, 3\] in .*a.json"):
        payloads.request_source(specs, d)
    # one shape per file is fine: dynamic dimensions take the payload's sizes
    rows = payloads.request_source(specs, d / "b.json").arrays["image"]
    assert rows.shape == (1, 4, 4, 3)


def test_missing_payloads_and_empty_directories_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"payload .*nope.json does not exist"):
        payloads.request_source(JPEG_SIG, tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="holds no \\*.json file"):
        payloads.request_source(JPEG_SIG, tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="is not JSON"):
        payloads.request_source(JPEG_SIG, bad)


# -- without a payload ---------------------------------------------------------------------------


def test_dynamic_dimensions_need_a_payload_or_an_input_shape():
    image = [InputSpec("image", dtypes.DT_FLOAT, (-1, -1, -1, 3))]
    with pytest.raises(ConfigError) as exc:
        payloads.request_source(image)
    msg = str(exc.value)
    assert msg.startswith("input 'image' has shape [-1, -1, -1, 3]: dimensions 1, 2 have no fixed")
    assert "--payload FILE" in msg and "--input-shape image=D1,D2,3" in msg and "\n" not in msg
    source = payloads.request_source(image, input_shapes=["image=24,32,3"])
    assert source.take(5, np.random.default_rng(0))["image"].shape == (5, 24, 32, 3)
    for shapes, fragment in [
        (["image=24,32"], "a row has shape [24, 32], but the signature's shape"),
        (["image=24,32,4"], "dimension 3 is 4, but the signature's shape [-1, -1, -1, 3] fixes it at 3"),
        (["mask=3"], "--input-shape names input 'mask', which the signature does not have"),
    ]:  # fmt: skip
        with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
            payloads.request_source(image, input_shapes=shapes)


def test_a_string_input_without_a_payload_says_to_give_one():
    with pytest.raises(ConfigError) as exc:
        payloads.request_source(JPEG_SIG)
    assert str(exc.value).startswith("input 'image_bytes' is DT_STRING: random values cannot")
    assert "--payload FILE" in exc.value.hint and "b64" in exc.value.hint
    unknown = [InputSpec("t", dtypes.DT_FLOAT, None)]
    with pytest.raises(ConfigError, match="input 't' has an unknown rank"):
        payloads.request_source(unknown)
    assert payloads.request_source(unknown, input_shapes=["t=4"]).take(2, np.random.default_rng())[
        "t"
    ].shape == (2, 4)


def test_preflight_reads_the_saved_model_signature(mlp_base, tmp_path):
    specs = payloads.signature_from_saved_model(mlp_base)
    assert specs == [InputSpec("x", dtypes.DT_FLOAT, (-1, 16))]
    assert payloads.signature_from_saved_model(tmp_path) is None  # nothing to read: no check
    with pytest.raises(ConfigError, match="signature 'nope' not found; the model has: .*serving_default"):
        payloads.signature_from_saved_model(mlp_base, "nope")
    bad = write(tmp_path, {"instances": [[1.0, 2.0]]})
    with pytest.raises(ConfigError, match="dimension 1 is 2, but the signature's shape .-1, 16."):
        payloads.check_saved_model(mlp_base, LoadConfig(payload=str(bad)))


# -- sampling and encoding -----------------------------------------------------------------------


def decode_grpc(body: bytes) -> np.ndarray:
    t = predict_pb2.PredictRequest.FromString(body).inputs["image_bytes"]
    assert t.dtype == dtypes.DT_STRING and not t.tensor_content  # strings travel in string_val
    return np.array(list(t.string_val), dtype=object)


def decode_rest(body: bytes) -> np.ndarray:
    values = json.loads(body)["inputs"]["image_bytes"]
    return np.array([base64.b64decode(v["b64"]) for v in values], dtype=object)


def test_grpc_and_rest_send_the_same_rows(tmp_path):
    images = [bytes([i]) * (10 + i) for i in range(5)]
    path = write(tmp_path, {"instances": [b64(x) for x in images]})
    mix = parse_size_mix("1:50,3:30,8:20")
    source = payloads.request_source(JPEG_SIG, path)
    pools = [
        payloads.PayloadPool(source, mix, enc, seed=0)
        for enc in (payloads.grpc_encoder("m"), payloads.rest_encoder())
    ]
    assert pools[0].bodies.keys() == pools[1].bodies.keys() == {1, 3, 8}
    for size in (1, 3, 8):
        g, r = pools[0].bodies[size], pools[1].bodies[size]
        assert len(g) == len(r) == max(payloads.MIN_VARIANTS, -(-5 // size))
        for gb, rb in zip(g, r):
            rows_g, rows_r = decode_grpc(gb), decode_rest(rb)
            assert list(rows_g) == list(rows_r) and len(rows_g) == size
            assert set(rows_g) <= set(images)
    # and the picks follow: the same sizes and bodies, in the same order
    assert [pools[0].pick()[0] for _ in range(50)] == [pools[1].pick()[0] for _ in range(50)]


def test_rows_are_drawn_without_replacement_when_the_payload_has_enough():
    many = payloads.PayloadRows({"i": np.arange(20)})
    rng = np.random.default_rng(1)
    for _ in range(20):
        got = many.take(8, rng)["i"]
        assert len(set(got.tolist())) == 8
    few = payloads.PayloadRows({"i": np.arange(3)})
    got = few.take(8, rng)["i"]
    assert len(got) == 8 and set(got.tolist()) <= {0, 1, 2}
    # enough bodies to use a payload's rows, within the memory budget
    assert payloads.variants(many, 1) == 20 and payloads.variants(many, 8) == payloads.MIN_VARIANTS
    big = payloads.PayloadRows({"i": np.zeros((1000, 1 << 16), dtype=np.uint8)})
    assert payloads.variants(big, 256) == payloads.VARIANT_BYTES // (256 << 16)


def test_string_tensors_are_written_as_string_val():
    arr = np.array([[b"\xff\xd8", b""], [b"abc", "text"]], dtype=object)
    tp = wire.tensor_proto(arr)
    from tensorflow.core.framework import tensor_pb2

    msg = tensor_pb2.TensorProto.FromString(tp)
    assert msg.dtype == dtypes.DT_STRING and not msg.tensor_content
    assert list(msg.string_val) == [b"\xff\xd8", b"", b"abc", b"text"]
    assert [d.size for d in msg.tensor_shape.dim] == [2, 2]
    back = tf.make_ndarray(msg)
    assert back.shape == (2, 2) and back[1, 1] == b"text"
    assert payloads.json_value(arr) == [[b64(b"\xff\xd8"), b64(b"")], [b64(b"abc"), b64(b"text")]]


def test_payload_files_keep_untyped_values_until_the_signature_types_them(tmp_path):
    part = payload_files.from_body({"instances": [[1, 2], [3, 4]]})
    assert part.inputs[payload_files.UNNAMED].dtype.kind == "i"
    part = payload_files.from_body({"inputs": {"s": [["a", b64(b"b")]]}})
    assert part.inputs["s"].dtype == object and part.inputs["s"].shape == (1, 2)
