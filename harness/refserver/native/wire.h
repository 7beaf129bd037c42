// The protobuf wire format by hand, for the few TF Serving messages the server speaks.
//
// Why by hand: the only protobuf runtime in Debian (3.21) clashes with the newer one inside
// TensorFlow's libraries, and the messages are few and small. Field numbers are those of
// tensorflow_serving/apis/*.proto and tensorflow/core/framework/*.proto.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace wire {

enum WireType { VARINT = 0, I64 = 1, LEN = 2, I32 = 5 };

// Reads one message's fields in order; any malformation sets ok = false and stops.
struct Reader {
  const uint8_t* p;
  const uint8_t* end;
  bool ok = true;
  // the current field
  uint32_t field = 0;
  int type = 0;
  uint64_t varint = 0;
  std::string_view bytes;  // LEN payload, or the 4/8 bytes of a fixed field

  Reader(const void* data, size_t n)
      : p(static_cast<const uint8_t*>(data)), end(static_cast<const uint8_t*>(data) + n) {}
  explicit Reader(std::string_view s) : Reader(s.data(), s.size()) {}

  bool read_varint(uint64_t* out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p >= end) return false;
      uint8_t b = *p++;
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) {
        *out = v;
        return true;
      }
    }
    return false;
  }

  // Advances to the next field; false at the end of the message or on an error (check ok).
  bool next() {
    if (!ok || p >= end) return false;
    uint64_t key;
    if (!read_varint(&key) || (key >> 3) == 0 || (key >> 3) > 0x1fffffff) return fail();
    field = uint32_t(key >> 3);
    type = int(key & 7);
    switch (type) {
      case VARINT:
        if (!read_varint(&varint)) return fail();
        return true;
      case I64:
        if (end - p < 8) return fail();
        bytes = std::string_view(reinterpret_cast<const char*>(p), 8);
        std::memcpy(&varint, p, 8);
        p += 8;
        return true;
      case I32: {
        if (end - p < 4) return fail();
        bytes = std::string_view(reinterpret_cast<const char*>(p), 4);
        uint32_t v;
        std::memcpy(&v, p, 4);
        varint = v;
        p += 4;
        return true;
      }
      case LEN: {
        uint64_t n;
        if (!read_varint(&n) || n > uint64_t(end - p)) return fail();
        bytes = std::string_view(reinterpret_cast<const char*>(p), n);
        p += n;
        return true;
      }
      case 3:  // start group: skip it whole
        return skip_group(field) ? true : fail();
      default:
        return fail();
    }
  }

  bool fail() {
    ok = false;
    return false;
  }

 private:
  bool skip_group(uint32_t number) {
    for (int depth = 1; depth > 0;) {
      uint64_t key, tmp;
      if (!read_varint(&key)) return false;
      int t = int(key & 7);
      if (t == VARINT) {
        if (!read_varint(&tmp)) return false;
      } else if (t == I64) {
        if (end - p < 8) return false;
        p += 8;
      } else if (t == I32) {
        if (end - p < 4) return false;
        p += 4;
      } else if (t == LEN) {
        if (!read_varint(&tmp) || tmp > uint64_t(end - p)) return false;
        p += tmp;
      } else if (t == 3) {
        depth++;
      } else if (t == 4) {
        depth--;
        if (depth == 0 && (key >> 3) != number) return false;
      } else {
        return false;
      }
    }
    return true;
  }
};

// Appends fields to a string.
struct Writer {
  std::string out;

  void varint(uint64_t v) {
    char buf[10];
    int n = 0;
    while (v >= 0x80) {
      buf[n++] = char(v | 0x80);
      v >>= 7;
    }
    buf[n++] = char(v);
    out.append(buf, n);
  }
  void key(uint32_t field, int type) { varint((uint64_t(field) << 3) | type); }
  void u64(uint32_t field, uint64_t v) {
    key(field, VARINT);
    varint(v);
  }
  void i64(uint32_t field, int64_t v) { u64(field, uint64_t(v)); }
  void bytes(uint32_t field, std::string_view s) {
    key(field, LEN);
    varint(s.size());
    out.append(s.data(), s.size());
  }
  // A nested message: write its body with another Writer, then this.
  void message(uint32_t field, const Writer& w) { bytes(field, w.out); }
};

}  // namespace wire
