// TensorFlow's C API, reached through dlopen.
//
// Why not link it: libtensorflow_framework.so.2 exports its own copies of BoringSSL, re2, zlib,
// abseil and protobuf, unversioned. Linked next to gRPC (which needs OpenSSL, Debian's re2 and
// zlib) the dynamic linker would bind one library's calls into the other's copy. Opened with
// RTLD_LOCAL | RTLD_DEEPBIND, TensorFlow resolves its references inside itself first and none of
// its symbols enter the global scope, so gRPC only ever sees Debian's libraries.
// RTLD_LAZY: binding its ~470,000 symbols up front cost 0.2 s of every start (0.55 s against 0.35).
// libharness_tf.so, next to the binary, is opened the same way when it was built against the
// TensorFlow found here ($HARNESS_REFSERVER_TF_CALLABLES=0 keeps to the C API alone).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

extern "C" {
struct TF_Status;
struct TF_Graph;
struct TF_Session;
struct TF_SessionOptions;
struct TF_Tensor;
struct TF_Operation;
struct TF_Buffer {
  const void* data;
  size_t length;
  void (*data_deallocator)(void* data, size_t length);
};
struct TF_Output {
  TF_Operation* oper;
  int index;
};
// TF_TString is a 24-byte union; only its size matters to us (the C API does the rest).
struct TF_TString {
  char raw[24];
};
}

namespace tfapi {

struct Api {
  TF_Status* (*NewStatus)();
  void (*DeleteStatus)(TF_Status*);
  int (*GetCode)(const TF_Status*);
  const char* (*Message)(const TF_Status*);
  TF_SessionOptions* (*NewSessionOptions)();
  void (*DeleteSessionOptions)(TF_SessionOptions*);
  void (*SetConfig)(TF_SessionOptions*, const void*, size_t, TF_Status*);
  TF_Graph* (*NewGraph)();
  void (*DeleteGraph)(TF_Graph*);
  TF_Operation* (*GraphOperationByName)(TF_Graph*, const char*);
  TF_Buffer* (*NewBuffer)();
  void (*DeleteBuffer)(TF_Buffer*);
  TF_Session* (*LoadSessionFromSavedModel)(const TF_SessionOptions*, const TF_Buffer*, const char*,
                                           const char* const*, int, TF_Graph*, TF_Buffer*,
                                           TF_Status*);
  TF_Session* (*NewSession)(TF_Graph*, const TF_SessionOptions*, TF_Status*);
  void (*CloseSession)(TF_Session*, TF_Status*);
  void (*DeleteSession)(TF_Session*, TF_Status*);
  void (*SessionRun)(TF_Session*, const TF_Buffer*, const TF_Output*, TF_Tensor* const*, int,
                     const TF_Output*, TF_Tensor**, int, const TF_Operation* const*, int,
                     TF_Buffer*, TF_Status*);
  TF_Tensor* (*AllocateTensor)(int, const int64_t*, int, size_t);
  void (*DeleteTensor)(TF_Tensor*);
  int (*TensorType)(const TF_Tensor*);
  int (*NumDims)(const TF_Tensor*);
  int64_t (*Dim)(const TF_Tensor*, int);
  size_t (*TensorByteSize)(const TF_Tensor*);
  void* (*TensorData)(const TF_Tensor*);
  int64_t (*TensorElementCount)(const TF_Tensor*);
  void (*StringInit)(TF_TString*);
  void (*StringCopy)(TF_TString*, const char*, size_t);
  const char* (*StringGetDataPointer)(const TF_TString*);
  size_t (*StringGetSize)(const TF_TString*);
  void (*StringDealloc)(TF_TString*);
  const char* (*Version)();

  // libharness_tf.so (tfcall.cc), when built for this TensorFlow: SavedModels loaded and run
  // through TensorFlow's C++ loader and callables. Null when absent: the C API path above.
  struct Callables {
    void* (*load)(const char* dir, const void* config, size_t config_len, int inline_runs,
                  char** signatures, size_t* signatures_len, char** error);
    int (*callable)(void* model, const char* const* feeds, int n_feeds, const char* const* fetches,
                    int n_fetches, int caller_thread, int64_t* handle, char** error);
    int (*run)(void* model, int64_t handle, TF_Tensor* const* in, int n_in, TF_Tensor** out,
               int n_out, char** error);
    void (*close)(void* model);
    void (*free)(void* p);
  };
  const Callables* callables = nullptr;
};

// Opens TensorFlow (once); returns nullptr and sets *error when it cannot.
const Api* load(std::string* error);
const Api& api();

}  // namespace tfapi
