"""One DataType table: the load generator's encoder, its REST metadata reader and the reference
server all read harness.dtypes and agree with it."""

import numpy as np

from harness import dtypes
from harness.load import payloads, wire
from harness.refserver import tensors


def test_sizes_and_numpy_names_agree_with_numpy():
    for d in dtypes.TABLE:
        if d.numpy is not None and d.itemsize is not None:
            assert np.dtype(d.numpy).itemsize == d.itemsize, d
    assert len(dtypes.BY_CODE) == len(dtypes.TABLE) == len(dtypes.BY_NAME)


def test_encoder_and_server_map_the_same_codes_to_the_same_numpy_dtypes():
    for code, npdt in wire.DTYPES.items():
        assert tensors.NUMPY_DTYPE[code] == npdt
    # the server also reads strings; the encoder invents only fixed-size data
    assert set(tensors.NUMPY_DTYPE) - set(wire.DTYPES) == {dtypes.DT_STRING}
    assert tensors.NUMPY_DTYPE[dtypes.DT_STRING] == np.dtype(object)


def test_bfloat16_is_named_everywhere_but_has_no_numpy_dtype():
    assert tensors.dtype_name(dtypes.DT_BFLOAT16) == "DT_BFLOAT16"
    assert dtypes.code("DT_BFLOAT16") == 14
    assert dtypes.DT_BFLOAT16 not in wire.DTYPES and dtypes.DT_BFLOAT16 not in tensors.NUMPY_DTYPE
    assert tensors.dtype_name(99) == "DT_<99>" and dtypes.code("DT_NOPE") == 0


def test_a_tensor_round_trips_through_the_encoder_and_the_server_decoder():
    from tensorflow.core.framework import tensor_pb2

    for code, npdt in wire.DTYPES.items():
        arr = np.arange(6).reshape(2, 3).astype(npdt)
        tp = tensor_pb2.TensorProto.FromString(wire.tensor_proto(arr))
        assert tp.dtype == code
        back = tensors.proto_to_numpy(tp, "x")
        assert back.dtype == npdt and np.array_equal(back, arr), dtypes.name(code)


def test_the_load_generator_invents_data_of_every_fixed_size_type():
    rng = np.random.default_rng(0)
    for code, npdt in wire.DTYPES.items():
        spec = payloads.InputSpec("x", code, (-1, 3))
        assert payloads.random_inputs([spec], 2, rng)["x"].dtype == npdt, dtypes.name(code)
