#include "model.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "log.h"
#include "messages.h"
#include "wire.h"

namespace {
const tfapi::Api& tf() { return tfapi::api(); }

struct ShapeInfo {
  bool known_rank = true;
  std::vector<int64_t> dims;
  std::vector<std::string> dim_names;
  bool present = false;
};

ShapeInfo parse_shape(std::string_view b) {
  ShapeInfo s;
  s.present = true;
  wire::Reader r(b);
  while (r.next()) {
    if (r.field == 2 && r.type == wire::LEN) {
      wire::Reader d(r.bytes);
      int64_t size = 0;
      std::string name;
      while (d.next()) {
        if (d.field == 1 && d.type == wire::VARINT) size = int64_t(d.varint);
        if (d.field == 2 && d.type == wire::LEN) name.assign(d.bytes);
      }
      s.dims.push_back(size);
      s.dim_names.push_back(name);
    } else if (r.field == 3 && r.type == wire::VARINT) {
      s.known_rank = r.varint == 0;
    }
  }
  return s;
}

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c < 0x20) {
      char buf[8];
      snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else out += char(c);
  }
  return out + "\"";
}

// TensorInfo as json_format.MessageToDict(preserving_proto_field_name=True) renders it: fields
// at their defaults are left out, int64 sizes are strings.
std::string tensor_info_json(const std::string& name, int dtype, const ShapeInfo& shape) {
  std::vector<std::string> parts;
  if (!name.empty()) parts.push_back("\"name\":" + json_string(name));
  if (dtype) parts.push_back("\"dtype\":" + json_string(dtype_name(dtype)));
  if (shape.present) {
    std::vector<std::string> sp;
    if (!shape.dims.empty()) {
      std::string dims = "\"dim\":[";
      for (size_t i = 0; i < shape.dims.size(); i++) {
        std::vector<std::string> dp;
        if (shape.dims[i]) dp.push_back("\"size\":\"" + std::to_string(shape.dims[i]) + "\"");
        if (!shape.dim_names[i].empty()) dp.push_back("\"name\":" + json_string(shape.dim_names[i]));
        dims += (i ? ",{" : "{");
        for (size_t k = 0; k < dp.size(); k++) dims += (k ? "," : "") + dp[k];
        dims += "}";
      }
      sp.push_back(dims + "]");
    }
    if (!shape.known_rank) sp.push_back("\"unknown_rank\":true");
    std::string s = "\"tensor_shape\":{";
    for (size_t k = 0; k < sp.size(); k++) s += (k ? "," : "") + sp[k];
    parts.push_back(s + "}");
  }
  std::string out = "{";
  for (size_t k = 0; k < parts.size(); k++) out += (k ? "," : "") + parts[k];
  return out + "}";
}

bool parse_tensor_map(std::string_view entry, TensorSpec* spec, std::string* info_json) {
  wire::Reader r(entry);
  std::string value;
  while (r.next()) {
    if (r.field == 1 && r.type == wire::LEN) spec->alias.assign(r.bytes);
    if (r.field == 2 && r.type == wire::LEN) value.append(r.bytes);
  }
  ShapeInfo shape;
  wire::Reader t(value);
  while (t.next()) {
    if (t.field == 1 && t.type == wire::LEN) spec->name.assign(t.bytes);
    if (t.field == 2 && t.type == wire::VARINT) spec->dtype = int(t.varint);
    if (t.field == 3 && t.type == wire::LEN) shape = parse_shape(t.bytes);
  }
  spec->known_rank = shape.present ? shape.known_rank : true;
  spec->shape = shape.dims;
  *info_json = tensor_info_json(spec->name, spec->dtype, shape);
  return r.ok && t.ok;
}

Signature parse_signature(const std::string& key, std::string_view b) {
  Signature sig;
  sig.name = key;
  sig.raw.assign(b);
  std::map<std::string, std::string> in_json, out_json;
  wire::Reader r(b);
  while (r.next()) {
    if (r.type != wire::LEN) continue;
    if (r.field == 1 || r.field == 2) {
      TensorSpec spec;
      std::string js;
      parse_tensor_map(r.bytes, &spec, &js);
      (r.field == 1 ? in_json : out_json)[spec.alias] = js;
      (r.field == 1 ? sig.inputs : sig.outputs).push_back(spec);
    } else if (r.field == 3) {
      sig.method_name.assign(r.bytes);
    }
  }
  auto by_alias = [](const TensorSpec& a, const TensorSpec& b) { return a.alias < b.alias; };
  std::sort(sig.inputs.begin(), sig.inputs.end(), by_alias);
  std::sort(sig.outputs.begin(), sig.outputs.end(), by_alias);
  auto obj = [](const std::map<std::string, std::string>& m) {
    std::string s = "{";
    bool first = true;
    for (auto& kv : m) {
      s += (first ? "" : ",") + json_string(kv.first) + ":" + kv.second;
      first = false;
    }
    return s + "}";
  };
  std::vector<std::string> parts;
  if (!in_json.empty()) parts.push_back("\"inputs\":" + obj(in_json));
  if (!out_json.empty()) parts.push_back("\"outputs\":" + obj(out_json));
  if (!sig.method_name.empty()) parts.push_back("\"method_name\":" + json_string(sig.method_name));
  sig.json = "{";
  for (size_t k = 0; k < parts.size(); k++) sig.json += (k ? "," : "") + parts[k];
  sig.json += "}";
  return sig;
}

bool resolve_output(TF_Graph* graph, TensorSpec* spec, std::string* error) {
  std::string op = spec->name;
  int index = 0;
  size_t colon = op.rfind(':');
  if (colon != std::string::npos) {
    index = std::atoi(op.c_str() + colon + 1);
    op.resize(colon);
  }
  TF_Operation* oper = tf().GraphOperationByName(graph, op.c_str());
  if (!oper) {
    *error = "the graph has no operation " + op + " for signature tensor " + spec->alias;
    return false;
  }
  spec->output = TF_Output{oper, index};
  return true;
}

// MetaGraphDef.signature_def = 5: map<string, SignatureDef>
void read_signatures(std::string_view meta, std::map<std::string, Signature>* out) {
  wire::Reader r(meta);
  while (r.next()) {
    if (r.field != 5 || r.type != wire::LEN) continue;
    wire::Reader e(r.bytes);
    std::string key, value;
    while (e.next()) {
      if (e.field == 1 && e.type == wire::LEN) key.assign(e.bytes);
      if (e.field == 2 && e.type == wire::LEN) value.append(e.bytes);
    }
    (*out)[key] = parse_signature(key, value);
  }
}

std::string config_proto(int intra, int inter) {
  wire::Writer w, exp;
  if (intra) w.u64(2, uint64_t(intra));
  if (inter) w.u64(5, uint64_t(inter));
  exp.u64(9, 1);  // disable_thread_spinning: spinning pool threads steal the pinned core
  w.message(16, exp);
  return w.out;
}
}  // namespace

const TensorSpec* Signature::input(const std::string& alias) const {
  for (auto& s : inputs)
    if (s.alias == alias) return &s;
  return nullptr;
}

const TensorSpec* Signature::output(const std::string& alias) const {
  for (auto& s : outputs)
    if (s.alias == alias) return &s;
  return nullptr;
}

std::string Signature::input_set() const {
  std::string s = "{";
  for (size_t i = 0; i < inputs.size(); i++) s += (i ? "," : "") + inputs[i].alias;
  return s + "}";
}

Status Signature::check_inputs(std::vector<std::pair<std::string, Tensor>>& given, bool batching,
                               std::vector<Tensor>* ordered, int64_t* size) const {
  for (auto& kv : given)
    if (!input(kv.first))
      return Invalid("input tensor alias not found in signature: " + kv.first + ". Inputs expected to be in the set " +
                     input_set() + ".");
  std::vector<std::string> missing;
  for (auto& spec : inputs) {
    bool found = false;
    for (auto& kv : given) found |= kv.first == spec.alias;
    if (!found) missing.push_back(spec.alias);
  }
  if (!missing.empty()) {
    std::vector<std::string> names;
    for (auto& kv : given) names.push_back(kv.first);
    std::sort(names.begin(), names.end());
    std::string g = "{", m = "{";
    for (size_t i = 0; i < names.size(); i++) g += (i ? "," : "") + names[i];
    for (size_t i = 0; i < missing.size(); i++) m += (i ? "," : "") + missing[i];
    return Invalid("input size does not match signature: " + std::to_string(given.size()) + "!=" +
                   std::to_string(inputs.size()) + " for inputs " + g + "}; missing " + m + "}");
  }
  ordered->clear();
  ordered->reserve(inputs.size());
  int64_t n = -1;
  for (auto& spec : inputs) {
    Tensor* arr = nullptr;
    for (auto& kv : given)
      if (kv.first == spec.alias) arr = &kv.second;
    if (dtype_supported(spec.dtype) && arr->dtype != spec.dtype)
      return Invalid("Expected tensor of type " + dtype_name(spec.dtype) + " but got type " + dtype_name(arr->dtype) +
                     " for input " + py_repr(spec.alias));
    if (spec.known_rank) {
      bool match = arr->shape.size() == spec.shape.size();
      for (size_t i = 0; match && i < spec.shape.size(); i++)
        match = spec.shape[i] == -1 || spec.shape[i] == arr->shape[i];
      if (!match)
        return Invalid("input " + py_repr(spec.alias) + " has shape " + shape_str(arr->shape) +
                       ", which does not match the signature's " + shape_str(spec.shape) + " (-1 is any size)");
    }
    if (batching) {
      if (arr->shape.empty()) return Invalid("Batching input tensors must have at least one dimension");
      if (n < 0) n = arr->shape[0];
      else if (arr->shape[0] != n) return Invalid("Batching Run() input tensors must have equal 0th-dimension size");
    }
    ordered->push_back(std::move(*arr));
  }
  if (n < 0) n = !ordered->empty() && !(*ordered)[0].shape.empty() ? (*ordered)[0].shape[0] : 1;
  *size = n;
  return Status::Ok();
}

std::shared_ptr<LoadedModel> LoadedModel::load(const std::string& path, int64_t version, int intra_op,
                                               int inter_op, int cores, std::string* error, bool inline_runs) {
  const auto& a = tf();
  auto model = std::shared_ptr<LoadedModel>(new LoadedModel());
  model->path = path;
  model->version = version;
  // One inter-op thread would only hand work from the caller to itself: run in the caller.
  int effective_inter = inter_op ? inter_op : cores;
  if (a.callables) {
    std::string cfg = config_proto(intra_op, inter_op);
    char *sigs = nullptr, *err = nullptr;
    size_t sigs_len = 0;
    model->callables_model_ =
        a.callables->load(path.c_str(), cfg.data(), cfg.size(), inline_runs, &sigs, &sigs_len, &err);
    if (!model->callables_model_) {
      *error = "cannot load SavedModel from " + path + ": " + (err ? err : "");
      a.callables->free(err);
      return nullptr;
    }
    read_signatures(std::string_view(sigs, sigs_len), &model->signatures);
    a.callables->free(sigs);
    model->caller_thread_ = effective_inter == 1;
    return model;
  }
  TF_Status* st = a.NewStatus();
  TF_SessionOptions* opts = a.NewSessionOptions();
  std::string cfg = config_proto(intra_op, inter_op);
  a.SetConfig(opts, cfg.data(), cfg.size(), st);
  model->graph_ = a.NewGraph();
  TF_Buffer* meta = a.NewBuffer();
  const char* tags[] = {"serve"};
  wire::Writer inline_options;
  inline_options.i64(3, -1);  // RunOptions.inter_op_thread_pool = -1: the caller's thread
  TF_Buffer load_options{inline_options.out.data(), inline_options.out.size(), nullptr};
  model->session_ = a.LoadSessionFromSavedModel(opts, inline_runs ? &load_options : nullptr, path.c_str(), tags, 1,
                                                model->graph_, meta, st);
  a.DeleteSessionOptions(opts);
  if (a.GetCode(st) != 0) {
    *error = "cannot load SavedModel from " + path + ": " + a.Message(st);
    a.DeleteStatus(st);
    a.DeleteBuffer(meta);
    model->session_ = nullptr;
    return nullptr;
  }
  a.DeleteStatus(st);
  read_signatures(std::string_view(static_cast<const char*>(meta->data), meta->length), &model->signatures);
  a.DeleteBuffer(meta);
  for (auto& kv : model->signatures) {
    for (auto* specs : {&kv.second.inputs, &kv.second.outputs})
      for (auto& spec : *specs)
        if (!resolve_output(model->graph_, &spec, error)) {
          *error = "cannot load SavedModel from " + path + ": " + *error;
          return nullptr;
        }
  }
  if (effective_inter == 1) {
    wire::Writer w;
    w.i64(3, -1);  // RunOptions.inter_op_thread_pool = -1: the caller's thread
    model->run_options_ = w.out;
  }
  return model;
}

LoadedModel::~LoadedModel() {
  const auto& a = tf();
  if (callables_model_) a.callables->close(callables_model_);
  if (session_) {
    TF_Status* st = a.NewStatus();
    a.CloseSession(session_, st);
    a.DeleteSession(session_, st);
    a.DeleteStatus(st);
  }
  if (graph_) a.DeleteGraph(graph_);
}

Status LoadedModel::signature(const std::string& name, const Signature** out) const {
  const std::string key = name.empty() ? "serving_default" : name;
  auto it = signatures.find(key);
  if (it == signatures.end())
    return Error(name.empty() ? FAILED_PRECONDITION : INVALID_ARGUMENT,
                 "Serving signature name: \"" + key + "\" not found in signature def");
  *out = &it->second;
  return Status::Ok();
}

namespace {
TF_Tensor* to_tf(const Tensor& t) {
  const auto& a = tf();
  int64_t count = t.count();
  if (t.dtype == DT_STRING) {
    TF_Tensor* out = a.AllocateTensor(DT_STRING, t.shape.data(), int(t.shape.size()), size_t(count) * sizeof(TF_TString));
    auto* s = static_cast<TF_TString*>(a.TensorData(out));
    for (int64_t i = 0; i < count; i++) {
      a.StringInit(&s[i]);
      a.StringCopy(&s[i], t.strings[size_t(i)].data(), t.strings[size_t(i)].size());
    }
    return out;
  }
  TF_Tensor* out = a.AllocateTensor(t.dtype, t.shape.data(), int(t.shape.size()), t.data.size());
  if (!t.data.empty()) std::memcpy(a.TensorData(out), t.data.data(), t.data.size());
  return out;
}

void from_tf(TF_Tensor* src, Tensor* t) {
  const auto& a = tf();
  t->dtype = a.TensorType(src);
  int nd = a.NumDims(src);
  t->shape.resize(size_t(nd));
  for (int i = 0; i < nd; i++) t->shape[size_t(i)] = a.Dim(src, i);
  if (t->dtype == DT_STRING) {
    int64_t n = a.TensorElementCount(src);
    auto* s = static_cast<const TF_TString*>(a.TensorData(src));
    t->strings.resize(size_t(n));
    for (int64_t i = 0; i < n; i++) t->strings[size_t(i)].assign(a.StringGetDataPointer(&s[i]), a.StringGetSize(&s[i]));
    return;
  }
  t->data.assign(static_cast<const char*>(a.TensorData(src)), a.TensorByteSize(src));
}
}  // namespace

Status LoadedModel::run(const Signature& sig, const std::vector<Tensor>& feeds, std::vector<Tensor>* outputs) const {
  const auto& a = tf();
  size_t ni = sig.inputs.size(), no = sig.outputs.size();
  std::vector<TF_Output> in(ni), out(no);
  std::vector<TF_Tensor*> in_t(ni), out_t(no, nullptr);
  for (size_t i = 0; i < ni; i++) {
    in[i] = sig.inputs[i].output;
    in_t[i] = to_tf(feeds[i]);
  }
  Status result;
  if (callables_model_) {
    result = run_callable(sig, in_t.data(), out_t.data());
  } else {
    for (size_t i = 0; i < no; i++) out[i] = sig.outputs[i].output;
    TF_Buffer opts{run_options_.data(), run_options_.size(), nullptr};
    TF_Status* st = a.NewStatus();
    a.SessionRun(session_, run_options_.empty() ? nullptr : &opts, in.data(), in_t.data(), int(ni), out.data(),
                 out_t.data(), int(no), nullptr, 0, nullptr, st);
    if (a.GetCode(st) != 0) result = Error(a.GetCode(st), a.Message(st));
    a.DeleteStatus(st);
  }
  for (auto* t : in_t) a.DeleteTensor(t);
  if (result.ok()) {
    outputs->resize(no);
    for (size_t i = 0; i < no; i++) from_tf(out_t[i], &(*outputs)[i]);
  }
  for (auto* t : out_t)
    if (t) a.DeleteTensor(t);
  return result;
}

Status LoadedModel::callable_for(const Signature& sig, int64_t* handle) const {
  std::lock_guard<std::mutex> g(callables_mu_);
  auto it = callables_.find(sig.name);
  if (it != callables_.end()) {
    *handle = it->second;
    return Status::Ok();
  }
  const auto* c = tf().callables;
  std::vector<const char*> feeds, fetches;
  for (auto& spec : sig.inputs) feeds.push_back(spec.name.c_str());
  for (auto& spec : sig.outputs) fetches.push_back(spec.name.c_str());
  char* err = nullptr;
  int code = c->callable(callables_model_, feeds.data(), int(feeds.size()), fetches.data(), int(fetches.size()),
                         caller_thread_, handle, &err);
  if (code != 0) {
    Status s = Error(code, err ? err : "");
    c->free(err);
    return s;
  }
  callables_[sig.name] = *handle;
  return Status::Ok();
}

void LoadedModel::create_thread_pools(int intra_op, int inter_op) {
  const auto& a = tf();
  TF_Status* st = a.NewStatus();
  TF_SessionOptions* opts = a.NewSessionOptions();
  std::string cfg = config_proto(intra_op, inter_op);
  a.SetConfig(opts, cfg.data(), cfg.size(), st);
  TF_Graph* graph = a.NewGraph();
  TF_Session* session = a.NewSession(graph, opts, st);
  if (session) {
    a.CloseSession(session, st);
    a.DeleteSession(session, st);
  }
  a.DeleteGraph(graph);
  a.DeleteSessionOptions(opts);
  a.DeleteStatus(st);
}

Status LoadedModel::run_callable(const Signature& sig, TF_Tensor* const* in, TF_Tensor** out) const {
  const auto* c = tf().callables;
  int64_t handle = -1;
  Status made = callable_for(sig, &handle);
  if (!made.ok()) return made;
  char* err = nullptr;
  int code = c->run(callables_model_, handle, in, int(sig.inputs.size()), out, int(sig.outputs.size()), &err);
  if (code == 0) return Status::Ok();
  Status s = Error(code, err ? err : "");
  c->free(err);
  return s;
}

Status LoadedModel::warm_up(int* count) const {
  *count = 0;
  std::string file = path + "/assets.extra/tf_serving_warmup_requests";
  struct stat sb;
  if (stat(file.c_str(), &sb) != 0 || !S_ISREG(sb.st_mode)) return Status::Ok();
  std::ifstream in(file, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string data = ss.str();
  // TFRecord: uint64 length, uint32 masked CRC, payload, uint32 masked CRC.
  size_t at = 0;
  while (at + 12 <= data.size()) {
    uint64_t len;
    std::memcpy(&len, data.data() + at, 8);
    at += 12;
    if (len > data.size() - at) return Error(DATA_LOSS, file + ": truncated record");
    std::string_view record(data.data() + at, len);
    at += len + 4;
    // PredictionLog: the last log_type field present decides; predict_log = 6
    wire::Reader r(record);
    int kind = 0;
    std::string predict_log;
    while (r.next()) {
      if (r.field >= 2 && r.field <= 7 && r.type == wire::LEN) {
        if (int(r.field) != kind) predict_log.clear();
        kind = int(r.field);
        if (kind == 6) predict_log.append(r.bytes);
      }
    }
    if (kind != 6) return Error(-1, file + ": only predict_log warm-up records are supported");
    std::string request;
    wire::Reader pl(predict_log);
    while (pl.next())
      if (pl.field == 1 && pl.type == wire::LEN) request.append(pl.bytes);
    PredictRequestMsg req;
    if (!parse_predict_request(request, &req)) return Error(DATA_LOSS, file + ": a record is not a PredictLog");
    const Signature* sig;
    Status s = signature(req.spec.signature_name, &sig);
    if (!s.ok()) return s;
    std::vector<std::pair<std::string, Tensor>> given;
    for (auto& kv : req.inputs) {
      Tensor t;
      bool wire_ok;
      s = decode_tensor_proto(kv.second, kv.first, &t, &wire_ok);
      if (!s.ok()) return s;
      given.emplace_back(kv.first, std::move(t));
    }
    std::vector<Tensor> feeds, outs;
    int64_t size;
    s = sig->check_inputs(given, false, &feeds, &size);
    if (!s.ok()) return s;
    s = run(*sig, feeds, &outs);
    if (!s.ok()) return s;
    ++*count;
  }
  logf("Finished reading warmup data for model at %s. Number of warmup records read: %d.", path.c_str(), *count);
  return Status::Ok();
}
