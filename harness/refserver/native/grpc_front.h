// TF Serving's gRPC services on gRPC's C core (libgrpc, which needs no protobuf runtime):
// PredictionService.Predict / GetModelMetadata and ModelService.GetModelStatus; the other
// methods answer UNIMPLEMENTED with the Python server's messages.
#pragma once
#include <string>
#include <thread>
#include <vector>

#include "predictor.h"

struct grpc_server;
struct grpc_completion_queue;

class GrpcFront {
 public:
  GrpcFront(Predictor* p, int threads, int pending_calls) : p_(p), threads_n_(threads), pending_(pending_calls) {}
  // Binds and starts; false with *error when the address cannot be had.
  bool start(const std::string& address, std::string* error);
  void stop();

  struct Method {
    std::string path;    // "/tensorflow.serving.PredictionService/Predict"
    void* tag;           // grpc_server_register_method's handle
    int pending;         // calls kept requested
  };

 private:
  void loop();
  void request_one(const Method* m);

  Predictor* p_;
  int threads_n_, pending_;
  std::vector<Method> methods_;
  grpc_server* server_ = nullptr;
  grpc_completion_queue* cq_ = nullptr;
  std::vector<std::thread> threads_;
};
