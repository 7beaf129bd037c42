#include "tfapi.h"

#include "log.h"

#include <dlfcn.h>
#include <unistd.h>

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
Api::Callables g_callables;

// Our own library built on TensorFlow's C++ API (tfcall.cc), from the binary's directory: only
// when it was compiled against the version just opened (its C++ ABI is that version's).
void open_callables(Api* a) {
  const char* off = std::getenv("HARNESS_REFSERVER_TF_CALLABLES");
  if (off && std::string(off) == "0") return;
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return;
  std::string path(self, size_t(n));
  path = path.substr(0, path.rfind('/') + 1) + "libharness_tf.so";
  void* lib = dlopen(path.c_str(), RTLD_LAZY | RTLD_LOCAL | RTLD_DEEPBIND);
  if (!lib) return;
  auto version = reinterpret_cast<const char* (*)()>(dlsym(lib, "hx_version"));
  Api::Callables& c = g_callables;
  bool ok = version && std::string(version()) == a->Version() && bind(lib, "hx_load", &c.load) &&
            bind(lib, "hx_callable", &c.callable) && bind(lib, "hx_run", &c.run) &&
            bind(lib, "hx_close", &c.close) && bind(lib, "hx_free", &c.free);
  if (!ok) {
    logerr("%s does not fit TensorFlow %s (built for %s): using the C API", path.c_str(), a->Version(),
           version ? version() : "?");
    g_error.clear();
    return;
  }
  a->callables = &c;
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
              bind(lib, "TF_NewSession", &a.NewSession) && bind(lib, "TF_CloseSession", &a.CloseSession) &&
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
              bind(lib, "TF_StringDealloc", &a.StringDealloc) && bind(lib, "TF_Version", &a.Version);
    g_loaded = ok;
    if (ok) open_callables(&a);
  });
  if (!g_loaded) {
    if (error) *error = g_error;
    return nullptr;
  }
  return &g_api;
}

const Api& api() { return g_api; }

}  // namespace tfapi
