// The request path shared by gRPC and REST (refserver/predict.py): check inputs, then run at
// once (no batching) or hand the job to the batcher; either way ``done`` answers it.
#pragma once
#include <string>
#include <vector>

#include "batcher.h"
#include "manager.h"
#include "metrics.h"

class Predictor {
 public:
  Predictor(ModelManager* manager, Batcher* batcher, ServingMetrics* metrics)
      : manager(manager), batcher(batcher), metrics(metrics) {}

  Status resolve(const std::string& name, int version_case, int64_t version, const std::string& label,
                 const std::string& signature_name, std::shared_ptr<LoadedModel>* model, const Signature** sig);
  // ``deadline``: steady seconds, 0 for none. ``done`` may run on this thread or a batch thread.
  void run(const std::string& name, const std::shared_ptr<LoadedModel>& model, const Signature* sig,
           std::vector<std::pair<std::string, Tensor>>& given, double deadline, Done done);
  void record(const std::string& name, int code, double started, const char* entrypoint);
  // Aliases to return (signature order), or the error for an unknown one.
  static Status select_outputs(const Signature& sig, const std::vector<std::string>& filter,
                               std::vector<bool>* keep);

  ModelManager* manager;
  Batcher* batcher;
  ServingMetrics* metrics;
};
