// TF Serving's request messages, parsed as the Python protobuf runtime (upb) parses them: a
// malformed message fails whole (gRPC then answers INTERNAL), a known field with the wrong wire
// type is an unknown field, a map entry holding unknown fields is dropped, strings must be UTF-8,
// a repeated singular message merges. Field numbers: tensorflow_serving/apis/*.proto.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct ModelSpecMsg {
  std::string name;
  std::string signature_name;
  int version_case = 0;  // 0: none, 2: version, 4: version_label
  int64_t version = 0;
  std::string label;
};

struct PredictRequestMsg {
  ModelSpecMsg spec;
  std::vector<std::pair<std::string, std::string>> inputs;  // alias -> TensorProto bytes
  std::vector<std::string> output_filter;
};

struct MetadataRequestMsg {
  ModelSpecMsg spec;
  std::vector<std::string> metadata_field;
};

bool parse_model_spec(std::string_view b, ModelSpecMsg* out);
bool parse_predict_request(std::string_view b, PredictRequestMsg* out);
bool parse_metadata_request(std::string_view b, MetadataRequestMsg* out);
// GetModelStatusRequest: model_spec = 1.
bool parse_status_request(std::string_view b, ModelSpecMsg* out);
