#include "tensor.h"

#include <cstring>

#include "wire.h"

namespace {
constexpr int64_t MAX_ELEMENTS = int64_t(1) << 31;
constexpr int64_t MAX_BROADCAST_ELEMENTS = int64_t(1) << 24;

// TensorProto's repeated value fields, by field number.
enum ValueField {
  F_FLOAT = 5, F_DOUBLE = 6, F_INT = 7, F_STRING = 8, F_INT64 = 10, F_BOOL = 11, F_HALF = 13,
  F_UINT32 = 16, F_UINT64 = 17,
};

const char* field_name(int f) {
  switch (f) {
    case F_FLOAT: return "float_val";
    case F_DOUBLE: return "double_val";
    case F_INT: return "int_val";
    case F_STRING: return "string_val";
    case F_INT64: return "int64_val";
    case F_BOOL: return "bool_val";
    case F_HALF: return "half_val";
    case F_UINT32: return "uint32_val";
    case F_UINT64: return "uint64_val";
  }
  return "?";
}

int value_field(int dt) {
  switch (dt) {
    case DT_FLOAT: return F_FLOAT;
    case DT_DOUBLE: return F_DOUBLE;
    case DT_INT32: case DT_UINT8: case DT_INT16: case DT_INT8: case DT_UINT16: return F_INT;
    case DT_INT64: return F_INT64;
    case DT_BOOL: return F_BOOL;
    case DT_STRING: return F_STRING;
    case DT_HALF: return F_HALF;
    case DT_UINT32: return F_UINT32;
    case DT_UINT64: return F_UINT64;
  }
  return 0;
}

// The value fields in the order tensors.py checks them (sorted by name).
const int SORTED_FIELDS[] = {F_BOOL, F_DOUBLE, F_FLOAT, F_HALF, F_INT64, F_INT, F_STRING, F_UINT32, F_UINT64};

struct Values {
  std::vector<uint64_t> ints;  // varint fields (raw 64 bits) and fixed fields' bit patterns
  std::vector<std::string> strings;
  size_t size() const { return ints.size() + strings.size(); }
};

struct Parsed {
  int dtype = 0;
  std::vector<int64_t> dims;
  bool unknown_rank = false;
  std::string_view content;
  Values values[18];
};

bool parse_dim(std::string_view b, int64_t* size) {
  wire::Reader r(b);
  while (r.next()) {
    if (r.field == 1 && r.type == wire::VARINT) *size = int64_t(r.varint);
    else if (r.field == 2 && r.type == wire::LEN && !valid_utf8(r.bytes)) return false;
  }
  return r.ok;
}

bool parse_shape(std::string_view b, Parsed* t) {
  wire::Reader r(b);
  while (r.next()) {
    if (r.field == 2 && r.type == wire::LEN) {
      int64_t size = 0;
      if (!parse_dim(r.bytes, &size)) return false;
      t->dims.push_back(size);
    } else if (r.field == 3 && r.type == wire::VARINT) {
      t->unknown_rank = r.varint != 0;
    }
  }
  return r.ok;
}

// Any message whose contents we do not interpret still has to be well formed.
bool well_formed(std::string_view b, int depth = 0) {
  if (depth > 100) return false;
  wire::Reader r(b);
  while (r.next()) {
  }
  return r.ok;
}

bool is_fixed32(int f) { return f == F_FLOAT; }
bool is_fixed64(int f) { return f == F_DOUBLE; }

bool add_values(wire::Reader& r, Values* v) {
  int f = int(r.field);
  if (f == F_STRING) {
    if (r.type == wire::LEN) v->strings.emplace_back(r.bytes);
    return true;
  }
  int scalar = is_fixed32(f) ? wire::I32 : is_fixed64(f) ? wire::I64 : wire::VARINT;
  if (r.type == scalar) {
    v->ints.push_back(r.varint);
    return true;
  }
  if (r.type != wire::LEN) return true;  // a wrong wire type: an unknown field, ignored
  const char* p = r.bytes.data();
  size_t n = r.bytes.size();
  if (scalar == wire::I32 || scalar == wire::I64) {
    size_t w = scalar == wire::I32 ? 4 : 8;
    if (n % w) return false;
    for (size_t i = 0; i < n; i += w) {
      uint64_t x = 0;
      std::memcpy(&x, p + i, w);
      v->ints.push_back(x);
    }
    return true;
  }
  wire::Reader packed(p, n);
  while (packed.p < packed.end) {
    uint64_t x;
    if (!packed.read_varint(&x)) return false;
    v->ints.push_back(x);
  }
  return true;
}

bool parse_tensor(std::string_view bytes, Parsed* t) {
  wire::Reader r(bytes);
  while (r.next()) {
    switch (r.field) {
      case 1:
        if (r.type == wire::VARINT) t->dtype = int(int32_t(uint32_t(r.varint)));
        break;
      case 2:
        if (r.type == wire::LEN && !parse_shape(r.bytes, t)) return false;
        break;
      case 4:
        if (r.type == wire::LEN) t->content = r.bytes;
        break;
      case 9: case 12: case 3:  // complex values, version_number: not served, only parsed
        break;
      case 14: case 15:
        if (r.type == wire::LEN && !well_formed(r.bytes)) return false;
        break;
      case F_FLOAT: case F_DOUBLE: case F_INT: case F_STRING: case F_INT64: case F_BOOL:
      case F_HALF: case F_UINT32: case F_UINT64:
        if (!add_values(r, &t->values[r.field])) return false;
        break;
      default:
        break;
    }
  }
  return r.ok;
}

template <typename T>
void put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof v);
}

// One value of ``field`` stored as the element type of ``dt`` (as numpy's casts do).
void store(int dt, uint64_t raw, std::string* out) {
  switch (dt) {
    case DT_FLOAT: put(out, uint32_t(raw)); break;
    case DT_DOUBLE: put(out, raw); break;
    case DT_INT32: put(out, int32_t(uint32_t(raw))); break;
    case DT_UINT8: put(out, uint8_t(raw)); break;
    case DT_INT8: put(out, int8_t(raw)); break;
    case DT_INT16: put(out, int16_t(raw)); break;
    case DT_UINT16: put(out, uint16_t(raw)); break;
    case DT_HALF: put(out, uint16_t(raw)); break;
    case DT_INT64: put(out, int64_t(raw)); break;
    case DT_UINT64: put(out, raw); break;
    case DT_UINT32: put(out, uint32_t(raw)); break;
    case DT_BOOL: put(out, uint8_t(raw != 0)); break;
  }
}
}  // namespace

const char* code_name(int code) {
  static const char* names[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
                                "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  return code >= 0 && code <= 16 ? names[code] : "UNKNOWN";
}

int http_status(int code) {
  static const int statuses[] = {200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401};
  return code >= 0 && code <= 16 ? statuses[code] : 500;
}

std::string dtype_name(int dt) {
  switch (dt) {
    case DT_FLOAT: return "DT_FLOAT";
    case DT_DOUBLE: return "DT_DOUBLE";
    case DT_INT32: return "DT_INT32";
    case DT_UINT8: return "DT_UINT8";
    case DT_INT16: return "DT_INT16";
    case DT_INT8: return "DT_INT8";
    case DT_STRING: return "DT_STRING";
    case DT_INT64: return "DT_INT64";
    case DT_BOOL: return "DT_BOOL";
    case DT_BFLOAT16: return "DT_BFLOAT16";
    case DT_UINT16: return "DT_UINT16";
    case DT_HALF: return "DT_HALF";
    case DT_UINT32: return "DT_UINT32";
    case DT_UINT64: return "DT_UINT64";
  }
  return "DT_<" + std::to_string(dt) + ">";
}

size_t dtype_size(int dt) {
  switch (dt) {
    case DT_FLOAT: case DT_INT32: case DT_UINT32: return 4;
    case DT_DOUBLE: case DT_INT64: case DT_UINT64: return 8;
    case DT_UINT8: case DT_INT8: case DT_BOOL: return 1;
    case DT_INT16: case DT_UINT16: case DT_HALF: return 2;
    case DT_STRING: return 24;  // sizeof(TF_TString)
  }
  return 0;
}

bool dtype_supported(int dt) { return dt == DT_STRING || (dt != DT_BFLOAT16 && dtype_size(dt) > 0); }

int64_t Tensor::count() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

size_t Tensor::row_bytes() const {
  size_t n = dtype == DT_STRING ? 1 : dtype_size(dtype);
  for (size_t i = 1; i < shape.size(); i++) n *= size_t(shape[i]);
  return n;
}

std::string py_repr(std::string_view s) {
  bool sq = s.find('\'') != std::string_view::npos, dq = s.find('"') != std::string_view::npos;
  char quote = sq && !dq ? '"' : '\'';
  std::string out(1, quote);
  for (unsigned char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == quote) out += std::string("\\") + char(c);
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else out += char(c);
  }
  return out + quote;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); i++) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

bool valid_utf8(std::string_view s) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    int len;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) len = 2, cp = c & 0x1f;
    else if ((c & 0xf0) == 0xe0) len = 3, cp = c & 0x0f;
    else if ((c & 0xf8) == 0xf0) len = 4, cp = c & 0x07;
    else return false;
    if (i + len > n) return false;
    for (int k = 1; k < len; k++) {
      if ((p[i + k] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += len;
  }
  return true;
}

bool tensor_proto_wire_ok(std::string_view bytes) {
  Parsed t;
  return parse_tensor(bytes, &t);
}

Status decode_tensor_proto(std::string_view bytes, const std::string& alias, Tensor* out, bool* wire_ok) {
  Parsed t;
  *wire_ok = parse_tensor(bytes, &t);
  if (!*wire_ok) return Error(INTERNAL, "Failed to parse the TensorProto");
  const std::string a = "input " + py_repr(alias);
  int dt = t.dtype;
  if (!dtype_supported(dt)) return Invalid(a + ": unsupported dtype " + dtype_name(dt));
  if (t.unknown_rank) return Invalid(a + ": tensor_shape must have a known rank");
  for (int64_t d : t.dims)
    if (d < 0) return Invalid(a + ": tensor_shape has a negative dimension " + shape_str(t.dims));
  int64_t count = 1;
  for (int64_t d : t.dims) {
    if (d != 0 && count > MAX_ELEMENTS / d) {
      count = MAX_ELEMENTS + 1;  // saturate: only "too many" matters past here
      for (int64_t e : t.dims)
        if (e == 0) count = 0;
      break;
    }
    count *= d;
  }
  if (count > MAX_ELEMENTS) return Invalid(a + ": shape " + shape_str(t.dims) + " has too many elements");
  out->dtype = dt;
  out->shape = t.dims;
  if (!t.content.empty()) {
    if (dt == DT_STRING) return Invalid(a + ": DT_STRING tensors cannot use tensor_content");
    size_t need = size_t(count) * dtype_size(dt);
    if (t.content.size() != need)
      return Invalid(a + ": tensor_content has " + std::to_string(t.content.size()) + " bytes but shape " +
                     shape_str(t.dims) + " of " + dtype_name(dt) + " needs " + std::to_string(need));
    out->data.assign(t.content.data(), t.content.size());
    return Status::Ok();
  }
  int field = value_field(dt);
  for (int other : SORTED_FIELDS)
    if (other != field && t.values[other].size())
      return Invalid(a + ": dtype is " + dtype_name(dt) + " but values were sent in " + field_name(other));
  const Values& v = t.values[field];
  int64_t n = int64_t(v.size());
  if (!(n == count || (n == 1 && count > 0) || (n == 0 && count == 0)))
    return Invalid(a + ": " + std::to_string(n) + " values were sent for shape " + shape_str(t.dims) +
                   ", which holds " + std::to_string(count));
  if (n == 1 && count > 1 && count > MAX_BROADCAST_ELEMENTS)
    return Invalid(a + ": one value for shape " + shape_str(t.dims) + " would expand to " + std::to_string(count) +
                   " elements; the reference server expands at most " + std::to_string(MAX_BROADCAST_ELEMENTS));
  if (dt == DT_STRING) {
    if (n == count) out->strings = v.strings;
    else out->strings.assign(size_t(count), n ? v.strings[0] : std::string());
    return Status::Ok();
  }
  std::string one;
  if (n == count) {
    out->data.reserve(size_t(count) * dtype_size(dt));
    for (uint64_t raw : v.ints) store(dt, raw, &out->data);
  } else if (count > 0) {
    store(dt, v.ints[0], &one);
    out->data.reserve(one.size() * size_t(count));
    for (int64_t i = 0; i < count; i++) out->data += one;
  }
  return Status::Ok();
}

namespace {
void packed_varints(wire::Writer* w, uint32_t field, const std::vector<uint64_t>& vals) {
  if (vals.empty()) return;
  wire::Writer body;
  for (uint64_t x : vals) body.varint(x);
  w->bytes(field, body.out);
}
}  // namespace

Status encode_tensor_proto(const Tensor& t, std::string* out) {
  wire::Writer w;
  if (t.dtype) w.u64(1, uint64_t(t.dtype));
  wire::Writer shape;
  for (int64_t d : t.shape) {
    wire::Writer dim;
    if (d) dim.i64(1, d);
    shape.message(2, dim);
  }
  w.message(2, shape);
  int64_t n = t.dtype == DT_STRING ? int64_t(t.strings.size()) : int64_t(t.data.size() / (dtype_size(t.dtype) ? dtype_size(t.dtype) : 1));
  const char* p = t.data.data();
  std::vector<uint64_t> vals;
  switch (t.dtype) {
    case DT_FLOAT:
      if (n) w.bytes(F_FLOAT, std::string_view(p, size_t(n) * 4));
      break;
    case DT_DOUBLE:
      if (n) w.bytes(F_DOUBLE, std::string_view(p, size_t(n) * 8));
      break;
    case DT_STRING:
      for (const auto& s : t.strings) w.bytes(F_STRING, s);
      break;
    default: {
      vals.reserve(size_t(n));
      for (int64_t i = 0; i < n; i++) {
        uint64_t x = 0;
        switch (t.dtype) {
          case DT_INT32: { int32_t v; memcpy(&v, p + 4 * i, 4); x = uint64_t(int64_t(v)); break; }
          case DT_UINT8: x = uint8_t(p[i]); break;
          case DT_INT8: x = uint64_t(int64_t(int8_t(p[i]))); break;
          case DT_INT16: { int16_t v; memcpy(&v, p + 2 * i, 2); x = uint64_t(int64_t(v)); break; }
          case DT_UINT16: case DT_HALF: { uint16_t v; memcpy(&v, p + 2 * i, 2); x = v; break; }
          case DT_INT64: case DT_UINT64: memcpy(&x, p + 8 * i, 8); break;
          case DT_UINT32: { uint32_t v; memcpy(&v, p + 4 * i, 4); x = v; break; }
          case DT_BOOL: x = p[i] != 0; break;
          default: return Invalid("output dtype " + dtype_name(t.dtype) + " cannot be serialized");
        }
        vals.push_back(x);
      }
      packed_varints(&w, uint32_t(value_field(t.dtype)), vals);
    }
  }
  *out = std::move(w.out);
  return Status::Ok();
}
