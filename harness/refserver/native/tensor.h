// Tensors between the wire and TensorFlow: TensorProto (gRPC) and JSON (REST) both decode into a
// Tensor (dtype, shape, packed little-endian bytes or strings); answers encode from one. The
// checks and their messages are those of harness/refserver/tensors.py, one for one.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "status.h"

// DataType enum values (tensorflow/core/framework/types.proto).
enum DType {
  DT_INVALID = 0, DT_FLOAT = 1, DT_DOUBLE = 2, DT_INT32 = 3, DT_UINT8 = 4, DT_INT16 = 5,
  DT_INT8 = 6, DT_STRING = 7, DT_INT64 = 9, DT_BOOL = 10, DT_BFLOAT16 = 14, DT_UINT16 = 17,
  DT_HALF = 19, DT_UINT32 = 22, DT_UINT64 = 23,
};

std::string dtype_name(int dt);
// Bytes per element of a supported dtype (the numpy table of tensors.py), 0 when unsupported.
size_t dtype_size(int dt);
bool dtype_supported(int dt);

struct Tensor {
  int dtype = DT_INVALID;
  std::vector<int64_t> shape;
  std::string data;                  // numeric: count * dtype_size bytes
  std::vector<std::string> strings;  // DT_STRING

  int64_t count() const;
  int64_t rows() const { return shape.empty() ? 1 : shape[0]; }
  size_t row_bytes() const;  // bytes of one row (numeric)
};

// Python's repr of an alias, as the messages quote it ('x').
std::string py_repr(std::string_view s);
// [1, 16]
std::string shape_str(const std::vector<int64_t>& shape);

// TensorProto bytes -> Tensor. ``wire_ok`` is false when the bytes are not a valid message (the
// caller answers INTERNAL, as gRPC's C++ core does); otherwise the status says whether the
// tensor itself is acceptable.
Status decode_tensor_proto(std::string_view bytes, const std::string& alias, Tensor* out,
                           bool* wire_ok);
// Whether the bytes parse as a TensorProto at all (for messages not yet interpreted).
bool tensor_proto_wire_ok(std::string_view bytes);
// Tensor -> TensorProto bytes with typed value fields (TF Serving's default layout).
Status encode_tensor_proto(const Tensor& t, std::string* out);
bool valid_utf8(std::string_view s);
