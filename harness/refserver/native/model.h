// One loaded SavedModel version: a TensorFlow session from the C API, its signatures (read from
// the MetaGraphDef the loader hands back), input checks and runs. Mirrors refserver/model.py.
#pragma once
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "policy.h"
#include "status.h"
#include "tensor.h"
#include "tfapi.h"

// The options a version's batching queue runs with: the global file's, or (with
// --enable_per_model_batching_parameters) its own batching_params.pbtxt's.
struct QueueOptions {
  policy::Params params;
  bool pad_variable_length_inputs = false;
};

struct TensorSpec {
  std::string alias;
  std::string name;  // graph tensor, e.g. "serving_default_x:0"
  int dtype = 0;
  bool known_rank = false;
  std::vector<int64_t> shape;  // -1: any size
  TF_Output output{};
};

struct Signature {
  std::string name;
  std::string method_name;
  std::vector<TensorSpec> inputs;   // sorted by alias
  std::vector<TensorSpec> outputs;  // sorted by alias
  std::string raw;                  // the SignatureDef's bytes, for GetModelMetadata
  std::string json;                 // the same as MessageToDict renders it, for REST metadata

  const TensorSpec* input(const std::string& alias) const;
  const TensorSpec* output(const std::string& alias) const;
  std::string input_set() const;  // "{a,b}", sorted
  // Validates a request's tensors; ``given`` is (alias, tensor) in request order. On success
  // ``ordered`` holds them in signature order and ``size`` is the request's 0th dimension.
  Status check_inputs(std::vector<std::pair<std::string, Tensor>>& given, bool batching,
                      std::vector<Tensor>* ordered, int64_t* size) const;
};

class LoadedModel {
 public:
  ~LoadedModel();
  // Loads ``path`` (a version directory); on failure returns null with the message in *error.
  // ``inline_runs``: the loader's own runs (restore, init) on the calling thread.
  static std::shared_ptr<LoadedModel> load(const std::string& path, int64_t version, int intra_op,
                                           int inter_op, int cores, std::string* error,
                                           bool inline_runs = false);
  // Creates TensorFlow's process-wide thread pools for these session options (a throw-away
  // session): they take the creating thread's priority and the CPU count it sees.
  static void create_thread_pools(int intra_op, int inter_op);
  // The signature ``name`` ("" means serving_default), or the error TF Serving answers.
  Status signature(const std::string& name, const Signature** out) const;
  // Runs on tensors in signature input order; outputs come in signature output order.
  Status run(const Signature& sig, const std::vector<Tensor>& feeds, std::vector<Tensor>* outputs) const;
  // Replays assets.extra/tf_serving_warmup_requests; returns how many ran, or an error.
  Status warm_up(int* count) const;

  std::string path;
  int64_t version = 0;
  std::shared_ptr<const QueueOptions> batching;  // null: served unbatched
  std::map<std::string, Signature> signatures;  // by key, sorted

 private:
  Status run_callable(const Signature& sig, TF_Tensor* const* in, TF_Tensor** out) const;
  Status callable_for(const Signature& sig, int64_t* handle) const;

  TF_Session* session_ = nullptr;
  TF_Graph* graph_ = nullptr;
  std::string run_options_;
  // Through libharness_tf.so (tfapi.h): the loaded model, and one callable per signature,
  // made at its first run (as TF_SessionRun builds its executor at the first run).
  void* callables_model_ = nullptr;
  bool caller_thread_ = false;
  mutable std::mutex callables_mu_;
  mutable std::map<std::string, int64_t> callables_;
};
