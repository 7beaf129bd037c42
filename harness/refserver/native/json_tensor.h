// JSON values <-> tensors for the REST API, with numpy's reading of nested lists (shape from the
// nesting, ragged lists refused, the element kind from the values) and tensors.py's checks and
// messages.
#pragma once
#include <rapidjson/document.h>

#include <string>
#include <vector>

#include "tensor.h"

using JValue = rapidjson::Value;

// ``children`` are the elements of a list (``is_list``), or the one top-level value.
Status json_to_tensor(const std::vector<const JValue*>& children, bool is_list, const std::string& alias, int dt,
                      Tensor* out);
Status json_value_to_tensor(const JValue& v, const std::string& alias, int dt, Tensor* out);
// Python's type(value).__name__ for a JSON value.
const char* py_type_name(const JValue& v);
// Object members with Python's dict semantics: a repeated key keeps its first place, last value.
std::vector<std::pair<std::string, const JValue*>> members(const JValue& obj);
const JValue* member(const JValue& obj, const char* key);
