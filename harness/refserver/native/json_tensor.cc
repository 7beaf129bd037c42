#include "json_tensor.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace {
constexpr int MAX_DEPTH = 990;  // Python's json gives up near its recursion limit

struct Scan {
  std::vector<int64_t> shape;
  int leaf_level = -1;
  bool ragged = false, too_deep = false;
  bool any_float = false, any_int = false, any_bool = false, any_other = false;
  std::vector<const JValue*> leaves;
};

void scan(const JValue& v, size_t level, Scan* s) {
  if (s->ragged || s->too_deep) return;
  if (level > MAX_DEPTH) {
    s->too_deep = true;
    return;
  }
  if (v.IsArray()) {
    if (s->leaf_level >= 0 && int(level) >= s->leaf_level) {
      s->ragged = true;
      return;
    }
    if (level == s->shape.size()) s->shape.push_back(v.Size());
    else if (s->shape[level] != int64_t(v.Size())) {
      s->ragged = true;
      return;
    }
    for (auto& c : v.GetArray()) scan(c, level + 1, s);
    return;
  }
  if (s->leaf_level < 0) {
    if (level != s->shape.size()) {
      s->ragged = true;
      return;
    }
    s->leaf_level = int(level);
  } else if (int(level) != s->leaf_level) {
    s->ragged = true;
    return;
  }
  if (v.IsBool()) s->any_bool = true;
  else if (v.IsInt64()) s->any_int = true;
  else if (v.IsDouble()) s->any_float = true;
  else s->any_other = true;  // strings, null, objects, integers past int64: numpy's object or str kind
  s->leaves.push_back(&v);
}

double as_double(const JValue& v) {
  if (v.IsBool()) return v.GetBool() ? 1.0 : 0.0;
  if (v.IsInt64()) return double(v.GetInt64());
  return v.GetDouble();
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  int32_t exp = int32_t((x >> 23) & 0xff) - 127 + 15;
  uint32_t mant = x & 0x7fffff;
  if (((x >> 23) & 0xff) == 0xff) return uint16_t(sign | 0x7c00 | (mant ? 0x200 : 0));
  if (exp >= 31) return uint16_t(sign | 0x7c00);
  if (exp <= 0) {
    if (exp < -10) return uint16_t(sign);
    mant |= 0x800000;
    uint32_t shift = uint32_t(14 - exp);
    uint32_t half = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) half++;
    return uint16_t(sign | half);
  }
  uint32_t half = sign | (uint32_t(exp) << 10) | (mant >> 13);
  uint32_t rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
  return uint16_t(half);
}

template <typename T>
void put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof v);
}

bool int_range(int dt, double* lo, double* hi) {
  switch (dt) {
    case DT_INT8: *lo = -128; *hi = 127; return true;
    case DT_UINT8: *lo = 0; *hi = 255; return true;
    case DT_INT16: *lo = -32768; *hi = 32767; return true;
    case DT_UINT16: *lo = 0; *hi = 65535; return true;
    case DT_INT32: *lo = -2147483648.0; *hi = 2147483647.0; return true;
    case DT_UINT32: *lo = 0; *hi = 4294967295.0; return true;
    case DT_INT64: *lo = -9223372036854775808.0; *hi = 9223372036854775807.0; return true;
    case DT_UINT64: *lo = 0; *hi = 18446744073709551615.0; return true;
  }
  return false;
}

bool b64_decode(const std::string& in, std::string* out) {
  static int8_t table[256];
  static bool init = false;
  if (!init) {
    std::memset(table, -1, sizeof table);
    const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; i++) table[uint8_t(a[i])] = int8_t(i);
    init = true;
  }
  if (in.size() % 4) return false;
  out->clear();
  for (size_t i = 0; i < in.size(); i += 4) {
    int v[4], pad = 0;
    for (int k = 0; k < 4; k++) {
      char c = in[i + k];
      if (c == '=' && i + 4 == in.size() && k >= 2) {
        v[k] = 0;
        pad++;
      } else if (pad || table[uint8_t(c)] < 0) {
        return false;
      } else {
        v[k] = table[uint8_t(c)];
      }
    }
    uint32_t n = uint32_t(v[0] << 18 | v[1] << 12 | v[2] << 6 | v[3]);
    out->push_back(char(n >> 16));
    if (pad < 2) out->push_back(char(n >> 8 & 0xff));
    if (pad < 1) out->push_back(char(n & 0xff));
  }
  return true;
}

Status string_tensor(const Scan& s, const std::string& alias, const JValue* top, Tensor* out) {
  out->dtype = DT_STRING;
  out->shape = s.shape;
  for (const JValue* v : s.leaves) {
    if (v->IsString()) {
      out->strings.emplace_back(v->GetString(), v->GetStringLength());
    } else if (v->IsObject()) {
      auto ms = members(*v);
      if (ms.size() == 1 && ms[0].first == "b64" && ms[0].second->IsString()) {
        std::string dec;
        if (!b64_decode(std::string(ms[0].second->GetString(), ms[0].second->GetStringLength()), &dec))
          return Invalid("Unable to base64 decode");
        out->strings.push_back(std::move(dec));
      } else if (ms.size() == 1 && ms[0].first == "b64") {
        return Invalid("Unable to base64 decode");
      } else {
        return Invalid("JSON object is not a tensor value (only {\"b64\": ...} objects are)");
      }
    } else {
      return Invalid("input " + py_repr(alias) + ": expected strings for DT_STRING");
    }
  }
  (void)top;
  return Status::Ok();
}
}  // namespace

const char* py_type_name(const JValue& v) {
  if (v.IsArray()) return "list";
  if (v.IsObject()) return "dict";
  if (v.IsString()) return "str";
  if (v.IsNull()) return "NoneType";
  if (v.IsBool()) return "bool";
  if (v.IsInt64() || v.IsUint64()) return "int";
  return "float";
}

std::vector<std::pair<std::string, const JValue*>> members(const JValue& obj) {
  std::vector<std::pair<std::string, const JValue*>> out;
  for (auto& m : obj.GetObject()) {
    std::string k(m.name.GetString(), m.name.GetStringLength());
    bool found = false;
    for (auto& kv : out)
      if (kv.first == k) {
        kv.second = &m.value;
        found = true;
      }
    if (!found) out.emplace_back(std::move(k), &m.value);
  }
  return out;
}

const JValue* member(const JValue& obj, const char* key) {
  const JValue* found = nullptr;
  size_t n = strlen(key);
  for (auto& m : obj.GetObject())
    if (m.name.GetStringLength() == n && std::memcmp(m.name.GetString(), key, n) == 0) found = &m.value;
  return found;
}

Status json_to_tensor(const std::vector<const JValue*>& children, bool is_list, const std::string& alias, int dt,
                      Tensor* out) {
  const std::string a = "input " + py_repr(alias);
  if (!dtype_supported(dt)) return Invalid(a + ": unsupported dtype " + dtype_name(dt));
  Scan s;
  if (is_list) {
    s.shape.push_back(int64_t(children.size()));
    for (const JValue* c : children) scan(*c, 1, &s);
  } else {
    scan(*children[0], 0, &s);
  }
  if (s.too_deep) return Invalid("JSON Parse error: the document is nested too deeply");
  const char* top_type = is_list ? "list" : py_type_name(*children[0]);
  if (dt == DT_STRING) {
    if (s.ragged) return Invalid(a + ": ragged list: setting an array element with a sequence.");
    return string_tensor(s, alias, is_list ? nullptr : children[0], out);
  }
  if (s.ragged) return Invalid(a + ": lists of different lengths cannot form a tensor");
  if (s.any_other)
    return Invalid(a + ": expected numbers for " + dtype_name(dt) + ", got " + top_type +
                   " with non-numeric or ragged values");
  size_t n = s.leaves.size();
  bool all_bool = s.any_bool && !s.any_int && !s.any_float;
  if (dt == DT_BOOL) {
    if (n && !all_bool) return Invalid(a + ": expected true/false values for DT_BOOL");
  } else if (n && all_bool) {
    return Invalid(a + ": expected numbers for " + dtype_name(dt) + ", got booleans");
  }
  double lo, hi;
  bool integer = int_range(dt, &lo, &hi);
  if (integer && n) {
    if (s.any_float)
      for (const JValue* v : s.leaves) {
        double d = as_double(*v);
        if (!std::isfinite(d) || d != std::floor(d))
          return Invalid(a + ": expected integers for " + dtype_name(dt) + ", got fractions");
      }
    bool bad = false;
    for (const JValue* v : s.leaves) {
      if (!s.any_float && v->IsInt64()) {
        int64_t x = v->GetInt64();
        bad |= (dt == DT_INT64) ? false : (dt == DT_UINT64 ? x < 0 : (double(x) < lo || double(x) > hi));
      } else {
        double d = as_double(*v);
        bad |= d < lo || d > hi;
      }
    }
    if (bad) return Invalid(a + ": value out of range for " + dtype_name(dt));
  }
  out->dtype = dt;
  out->shape = s.shape;
  out->data.reserve(n * dtype_size(dt));
  for (const JValue* v : s.leaves) {
    bool as_float = s.any_float;
    switch (dt) {
      case DT_FLOAT:
        put(&out->data, as_float ? float(as_double(*v)) : (v->IsBool() ? float(v->GetBool()) : float(v->GetInt64())));
        break;
      case DT_DOUBLE: put(&out->data, as_double(*v)); break;
      case DT_HALF: put(&out->data, float_to_half(float(as_double(*v)))); break;
      case DT_BOOL: put(&out->data, uint8_t(v->GetBool())); break;
      default: {
        int64_t x = as_float ? int64_t(as_double(*v)) : (v->IsBool() ? int64_t(v->GetBool()) : v->GetInt64());
        switch (dt) {
          case DT_INT8: put(&out->data, int8_t(x)); break;
          case DT_UINT8: put(&out->data, uint8_t(x)); break;
          case DT_INT16: put(&out->data, int16_t(x)); break;
          case DT_UINT16: put(&out->data, uint16_t(x)); break;
          case DT_INT32: put(&out->data, int32_t(x)); break;
          case DT_UINT32: put(&out->data, uint32_t(x)); break;
          case DT_INT64: put(&out->data, x); break;
          case DT_UINT64: put(&out->data, uint64_t(x)); break;
        }
      }
    }
  }
  return Status::Ok();
}

Status json_value_to_tensor(const JValue& v, const std::string& alias, int dt, Tensor* out) {
  if (v.IsArray()) {
    std::vector<const JValue*> children;
    children.reserve(v.Size());
    for (auto& c : v.GetArray()) children.push_back(&c);
    return json_to_tensor(children, true, alias, dt, out);
  }
  return json_to_tensor({&v}, false, alias, dt, out);
}
