#include "messages.h"

#include "tensor.h"
#include "wire.h"

namespace {
// Collects every occurrence of one singular message field: parsing the concatenation is what
// protobuf's merge of repeated occurrences means.
bool string_field(const wire::Reader& r, std::string* out) {
  if (!valid_utf8(r.bytes)) return false;
  out->assign(r.bytes);
  return true;
}
}  // namespace

bool parse_model_spec(std::string_view b, ModelSpecMsg* out) {
  wire::Reader r(b);
  while (r.next()) {
    if (r.type != wire::LEN) continue;
    switch (r.field) {
      case 1:
        if (!string_field(r, &out->name)) return false;
        break;
      case 3:
        if (!string_field(r, &out->signature_name)) return false;
        break;
      case 4:
        if (!string_field(r, &out->label)) return false;
        out->version_case = 4;
        break;
      case 2: {  // google.protobuf.Int64Value { int64 value = 1; }
        if (out->version_case != 2) out->version = 0;
        out->version_case = 2;
        wire::Reader v(r.bytes);
        while (v.next())
          if (v.field == 1 && v.type == wire::VARINT) out->version = int64_t(v.varint);
        if (!v.ok) return false;
        break;
      }
    }
  }
  return r.ok;
}

namespace {
// One map<string, TensorProto> entry; false on a malformation, *keep false when protobuf would
// drop the entry (it carries fields other than a LEN key and value).
bool parse_entry(std::string_view b, std::string* key, std::string* value, bool* keep) {
  wire::Reader r(b);
  *keep = true;
  while (r.next()) {
    if (r.field == 1 && r.type == wire::LEN) {
      if (!string_field(r, key)) return false;
    } else if (r.field == 2 && r.type == wire::LEN) {
      if (!tensor_proto_wire_ok(r.bytes)) return false;
      value->append(r.bytes);
    } else {
      *keep = false;
    }
  }
  return r.ok && (*keep ? tensor_proto_wire_ok(*value) : true);
}
}  // namespace

bool parse_predict_request(std::string_view b, PredictRequestMsg* out) {
  wire::Reader r(b);
  std::string spec;
  bool has_spec = false;
  while (r.next()) {
    if (r.type != wire::LEN) continue;
    if (r.field == 1) {
      // parsed once per occurrence so that a malformed one fails, then merged
      ModelSpecMsg probe;
      if (!parse_model_spec(r.bytes, &probe)) return false;
      spec.append(r.bytes);
      has_spec = true;
    } else if (r.field == 2) {
      std::string key, value;
      bool keep;
      if (!parse_entry(r.bytes, &key, &value, &keep)) return false;
      if (!keep) continue;
      bool replaced = false;
      for (auto& kv : out->inputs)
        if (kv.first == key) {
          kv.second = std::move(value);
          replaced = true;
          break;
        }
      if (!replaced) out->inputs.emplace_back(std::move(key), std::move(value));
    } else if (r.field == 3) {
      std::string s;
      if (!string_field(r, &s)) return false;
      out->output_filter.push_back(std::move(s));
    } else if (r.field >= 5 && r.field <= 7) {
      // streamed-predict options, client id, request options: parsed for validity only
      if (r.field == 6) continue;  // client_id: bytes
      wire::Reader inner(r.bytes);
      while (inner.next()) {
      }
      if (!inner.ok) return false;
    }
  }
  if (!r.ok) return false;
  return has_spec ? parse_model_spec(spec, &out->spec) : true;
}

bool parse_metadata_request(std::string_view b, MetadataRequestMsg* out) {
  wire::Reader r(b);
  std::string spec;
  while (r.next()) {
    if (r.type != wire::LEN) continue;
    if (r.field == 1) {
      spec.append(r.bytes);
    } else if (r.field == 2) {
      std::string s;
      if (!string_field(r, &s)) return false;
      out->metadata_field.push_back(std::move(s));
    }
  }
  return r.ok && parse_model_spec(spec, &out->spec);
}

bool parse_status_request(std::string_view b, ModelSpecMsg* out) {
  wire::Reader r(b);
  std::string spec;
  while (r.next())
    if (r.field == 1 && r.type == wire::LEN) spec.append(r.bytes);
  return r.ok && parse_model_spec(spec, out);
}
