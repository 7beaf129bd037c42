"""TensorFlow's DataType codes (tensorflow/core/framework/types.proto): one table for the load
generator, its wire encoder and the reference server. Standard library only, like ``codes``:
numpy dtypes are named by string and built where numpy is used.

Only the types the harness can carry are listed. BFLOAT16 has a name and a size but no numpy
dtype (numpy has none), so it can be named in an error but not encoded or decoded; STRING has a
numpy dtype (``object``) but no fixed item size.
"""

from __future__ import annotations

import dataclasses

DT_FLOAT = 1
DT_DOUBLE = 2
DT_INT32 = 3
DT_UINT8 = 4
DT_INT16 = 5
DT_INT8 = 6
DT_STRING = 7
DT_INT64 = 9
DT_BOOL = 10
DT_BFLOAT16 = 14
DT_UINT16 = 17
DT_HALF = 19
DT_UINT32 = 22
DT_UINT64 = 23


@dataclasses.dataclass(frozen=True, kw_only=True)
class DType:
    code: int  # the DataType enum value
    name: str  # as TF Serving writes it in metadata and errors: "DT_FLOAT"
    numpy: str | None  # numpy's name for the dtype; None where numpy has none
    itemsize: int | None  # bytes per element in tensor_content; None for variable length


TABLE = (
    DType(code=DT_FLOAT, name="DT_FLOAT", numpy="float32", itemsize=4),
    DType(code=DT_DOUBLE, name="DT_DOUBLE", numpy="float64", itemsize=8),
    DType(code=DT_INT32, name="DT_INT32", numpy="int32", itemsize=4),
    DType(code=DT_UINT8, name="DT_UINT8", numpy="uint8", itemsize=1),
    DType(code=DT_INT16, name="DT_INT16", numpy="int16", itemsize=2),
    DType(code=DT_INT8, name="DT_INT8", numpy="int8", itemsize=1),
    DType(code=DT_STRING, name="DT_STRING", numpy="object", itemsize=None),
    DType(code=DT_INT64, name="DT_INT64", numpy="int64", itemsize=8),
    DType(code=DT_BOOL, name="DT_BOOL", numpy="bool", itemsize=1),
    DType(code=DT_BFLOAT16, name="DT_BFLOAT16", numpy=None, itemsize=2),
    DType(code=DT_UINT16, name="DT_UINT16", numpy="uint16", itemsize=2),
    DType(code=DT_HALF, name="DT_HALF", numpy="float16", itemsize=2),
    DType(code=DT_UINT32, name="DT_UINT32", numpy="uint32", itemsize=4),
    DType(code=DT_UINT64, name="DT_UINT64", numpy="uint64", itemsize=8),
)
BY_CODE = {d.code: d for d in TABLE}
BY_NAME = {d.name: d for d in TABLE}


def name(code: int) -> str:
    """``DT_FLOAT`` for 1; ``DT_<n>`` for a code outside the table."""
    d = BY_CODE.get(code)
    return d.name if d else f"DT_<{code}>"


def code(name: str) -> int:
    """The code for ``DT_FLOAT`` and the like; 0 (DT_INVALID) for a name outside the table."""
    d = BY_NAME.get(name)
    return d.code if d else 0


def fixed_size() -> tuple[DType, ...]:
    """The types numpy can hold with a fixed item size: what ``tensor_content`` can carry and
    what a load generator can invent random data for."""
    return tuple(d for d in TABLE if d.numpy is not None and d.itemsize is not None)
