// libharness_tf.so: the two things the server needs from TensorFlow's C++ API, behind a small C
// interface (tfcall.h), compiled against the installed wheel's headers as a custom op is.
//
// Why: the C API loads a SavedModel and then imports its whole graph a second time into a
// TF_Graph (shape inference over every node and function), only so that TF_SessionRun can
// name tensors by TF_Output; and TF_SessionRun resolves those names to an executor on every
// call. TensorFlow's own loader with SavedModelBundleLite keeps the signatures and nothing
// else, and a callable (Session::MakeCallable, the path TF Serving and the Python server
// take) resolves feeds and fetches once. Measured in docs/native.md ("Restart to ready",
// "Server CPU per request").
//
// The library links libtensorflow_cc and libtensorflow_framework; the server opens it with
// RTLD_LOCAL | RTLD_DEEPBIND like the C API itself (tfapi.h says why), and only when the
// TensorFlow it finds is the one this was compiled against (hx_version).
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_set>
#include <vector>

#include "tensorflow/c/c_api.h"
#include "tensorflow/c/tf_tensor_helper.h"
#include "tensorflow/cc/saved_model/loader.h"
#include "tensorflow/core/protobuf/config.pb.h"
#include "tensorflow/core/protobuf/meta_graph.pb.h"
#include "tensorflow/core/public/session.h"

namespace {
char* copy(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  std::memcpy(out, s.data(), s.size());
  out[s.size()] = 0;
  return out;
}

int fail(const absl::Status& s, char** error) {
  if (error) *error = copy(std::string(s.message()));
  return int(s.code());
}
}  // namespace

struct HxModel {
  tensorflow::SavedModelBundleLite bundle;
};

extern "C" {

// The TensorFlow version these headers are (the wheel's, given by build.sh: the headers do not
// say): the server uses this library only when it matches TF_Version() of the one it opened.
const char* hx_version() { return HX_TF_VERSION; }

// Loads the SavedModel's "serve" graph. ``config``: a serialized ConfigProto; ``inline_runs``:
// the loader's restore and init runs on the calling thread. On success returns the model and,
// in *signatures, a serialized MetaGraphDef holding only its signature_def map (free with
// hx_free); on failure null, with the reason in *error.
HxModel* hx_load(const char* dir, const void* config, size_t config_len, int inline_runs, char** signatures,
                 size_t* signatures_len, char** error) {
  tensorflow::SessionOptions options;
  if (!options.config.ParseFromArray(config, int(config_len))) {
    *error = copy("the session's ConfigProto does not parse");
    return nullptr;
  }
  auto* model = new HxModel();
  tensorflow::RunOptions run_options;
  if (inline_runs) run_options.set_inter_op_thread_pool(-1);
  absl::Status s = tensorflow::LoadSavedModel(options, run_options, dir, {"serve"}, &model->bundle);
  if (!s.ok()) {
    fail(s, error);
    delete model;
    return nullptr;
  }
  tensorflow::MetaGraphDef meta;
  *meta.mutable_signature_def() = model->bundle.GetSignatures();
  std::string out;
  meta.SerializeToString(&out);
  *signatures_len = out.size();
  *signatures = copy(out);
  return model;
}

// A callable for these feeds and fetches (tensor names, "op:index"); ``caller_thread``: run
// the step on the calling thread (RunOptions.inter_op_thread_pool = -1). Returns 0 and the
// handle in *handle, or the error code with the reason in *error.
int hx_callable(HxModel* m, const char* const* feeds, int n_feeds, const char* const* fetches, int n_fetches,
                int caller_thread, int64_t* handle, char** error) {
  tensorflow::CallableOptions opts;
  for (int i = 0; i < n_feeds; i++) opts.add_feed(feeds[i]);
  for (int i = 0; i < n_fetches; i++) opts.add_fetch(fetches[i]);
  if (caller_thread) opts.mutable_run_options()->set_inter_op_thread_pool(-1);
  tensorflow::Session::CallableHandle h;
  absl::Status s = m->bundle.GetSession()->MakeCallable(opts, &h);
  if (!s.ok()) return fail(s, error);
  *handle = int64_t(h);
  return 0;
}

// Runs a callable: inputs in its feed order, outputs (new TF_Tensors, the caller deletes them)
// in its fetch order. Returns 0, or the error code with the reason in *error.
int hx_run(HxModel* m, int64_t handle, TF_Tensor* const* in, int n_in, TF_Tensor** out, int n_out, char** error) {
  std::vector<tensorflow::Tensor> feeds(static_cast<size_t>(n_in)), fetches;
  for (int i = 0; i < n_in; i++) {
    absl::Status s = tensorflow::TF_TensorToTensor(in[i], &feeds[size_t(i)]);
    if (!s.ok()) return fail(s, error);
  }
  absl::Status s = m->bundle.GetSession()->RunCallable(handle, feeds, &fetches, nullptr);
  if (!s.ok()) return fail(s, error);
  if (int(fetches.size()) != n_out) return fail(absl::InternalError("the callable returned another number of outputs"), error);
  for (int i = 0; i < n_out; i++) {
    out[i] = tensorflow::TF_TensorFromTensor(fetches[size_t(i)], &s);
    if (!s.ok()) {
      for (int k = 0; k < i; k++) TF_DeleteTensor(out[k]);
      return fail(s, error);
    }
  }
  return 0;
}

void hx_close(HxModel* m) { delete m; }  // the bundle closes its session

void hx_free(void* p) { std::free(p); }

}  // extern "C"
