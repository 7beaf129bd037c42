#include "tfapi.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

namespace tfapi {
namespace {
Api g_api;
bool g_loaded = false;
std::string g_error;

template <typename F>
bool bind(void* lib, const char* name, F* slot) {
  void* sym = dlsym(lib, name);
  if (!sym) {
    g_error = std::string("TensorFlow's C API has no ") + name;
    return false;
  }
  *slot = reinterpret_cast<F>(sym);
  return true;
}
}  // namespace

const Api* load(std::string* error) {
  static std::once_flag once;
  std::call_once(once, [] {
    // The launcher passes the library's directory; a plain name falls back on the loader's path.
    const char* dir = std::getenv("HARNESS_TF_LIBDIR");
    std::string path = dir && *dir ? std::string(dir) + "/libtensorflow_cc.so.2"
                                   : std::string("libtensorflow_cc.so.2");
    void* lib = dlopen(path.c_str(), RTLD_LAZY | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!lib) {
      g_error = std::string("cannot open TensorFlow's C API: ") + dlerror();
      return;
    }
    Api& a = g_api;
    bool ok = bind(lib, "TF_NewStatus", &a.NewStatus) && bind(lib, "TF_DeleteStatus", &a.DeleteStatus) &&
              bind(lib, "TF_GetCode", &a.GetCode) && bind(lib, "TF_Message", &a.Message) &&
              bind(lib, "TF_NewSessionOptions", &a.NewSessionOptions) &&
              bind(lib, "TF_DeleteSessionOptions", &a.DeleteSessionOptions) &&
              bind(lib, "TF_SetConfig", &a.SetConfig) && bind(lib, "TF_NewGraph", &a.NewGraph) &&
              bind(lib, "TF_DeleteGraph", &a.DeleteGraph) &&
              bind(lib, "TF_GraphOperationByName", &a.GraphOperationByName) &&
              bind(lib, "TF_NewBuffer", &a.NewBuffer) && bind(lib, "TF_DeleteBuffer", &a.DeleteBuffer) &&
              bind(lib, "TF_LoadSessionFromSavedModel", &a.LoadSessionFromSavedModel) &&
              bind(lib, "TF_CloseSession", &a.CloseSession) &&
              bind(lib, "TF_DeleteSession", &a.DeleteSession) && bind(lib, "TF_SessionRun", &a.SessionRun) &&
              bind(lib, "TF_AllocateTensor", &a.AllocateTensor) &&
              bind(lib, "TF_DeleteTensor", &a.DeleteTensor) && bind(lib, "TF_TensorType", &a.TensorType) &&
              bind(lib, "TF_NumDims", &a.NumDims) && bind(lib, "TF_Dim", &a.Dim) &&
              bind(lib, "TF_TensorByteSize", &a.TensorByteSize) &&
              bind(lib, "TF_TensorData", &a.TensorData) &&
              bind(lib, "TF_TensorElementCount", &a.TensorElementCount) &&
              bind(lib, "TF_StringInit", &a.StringInit) && bind(lib, "TF_StringCopy", &a.StringCopy) &&
              bind(lib, "TF_StringGetDataPointer", &a.StringGetDataPointer) &&
              bind(lib, "TF_StringGetSize", &a.StringGetSize) &&
              bind(lib, "TF_StringDealloc", &a.StringDealloc);
    g_loaded = ok;
  });
  if (!g_loaded) {
    if (error) *error = g_error;
    return nullptr;
  }
  return &g_api;
}

const Api& api() { return g_api; }

}  // namespace tfapi
