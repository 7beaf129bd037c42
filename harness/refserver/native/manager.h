// Which models and versions are loaded: start-up loading, version polling, lookups. Mirrors
// refserver/manager.py: policy "latest N" / "all" / "specific", availability-preserving
// replacement of an old version by a newer one, status of every version seen.
#pragma once
#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <rapidjson/document.h>
#include <string>
#include <thread>
#include <vector>

#include "metrics.h"
#include "model.h"
#include "status.h"

enum State { S_UNKNOWN = 0, S_START = 10, S_LOADING = 20, S_AVAILABLE = 30, S_UNLOADING = 40, S_END = 50 };
const char* state_name(int state);

struct ModelConfig {
  std::string name, base_path, policy = "latest";
  std::vector<int64_t> versions{1};
  std::vector<std::pair<std::string, int64_t>> labels;
};

// The "models" list of the launcher's --config JSON.
std::vector<ModelConfig> models_from_json(const rapidjson::Value& models);
// (version directory, version) of every version load_initial would load, in its order; none
// once a model would be refused.
std::vector<std::pair<std::string, int64_t>> initial_versions(const std::vector<ModelConfig>& configs);

struct VersionStatus {
  int64_t version = 0;
  int state = S_UNKNOWN;
  std::string error_code = "OK";
  std::string error_message;
};

struct ServedModel {
  ModelConfig config;
  std::map<int64_t, std::shared_ptr<LoadedModel>> loaded;
  std::map<int64_t, VersionStatus> status;
  std::shared_ptr<LoadedModel> latest;
  std::vector<int64_t> wanted(const std::vector<int64_t>& found) const;
};

class ModelManager {
 public:
  ModelManager(std::vector<ModelConfig> configs, int intra, int inter, int cores, int poll_seconds, bool warm_up,
               ServingMetrics* metrics);
  ~ModelManager();
  // Loads every model's wanted versions; a failure returns the start-up error (message, hint).
  bool load_initial(std::string* message, std::string* hint);
  void start_polling();
  void stop();
  void poll_once();
  // Called after a version leaves service, before its model is freed (the batcher drains it).
  std::function<void(const std::string&, int64_t)> on_retire;
  // Batching: every version queues with ``global`` (null: batching off); with ``per_model``,
  // each version's options come from ``resolver`` (argv, the version directory and the pool size
  // appended), which reads its batching_params.pbtxt and prints one JSON line.
  void set_batching(std::shared_ptr<const QueueOptions> global, int pool_threads, bool per_model,
                    std::vector<std::string> resolver);

  Status resolve(const std::string& name, int version_case, int64_t version, const std::string& label,
                 std::shared_ptr<LoadedModel>* out);
  Status statuses(const std::string& name, int version_case, int64_t version, const std::string& label,
                  std::vector<VersionStatus>* out);

 private:
  bool load(ServedModel& served, int64_t version, std::string* error, std::string* hint = nullptr);
  bool queue_options(const std::string& path, std::shared_ptr<const QueueOptions>* out, std::string* error,
                     std::string* hint);
  void unload(ServedModel& served, int64_t version);
  void gauge(const std::string& name, int64_t version, int state);

  std::map<std::string, ServedModel> models_;
  std::vector<std::string> order_;
  int intra_, inter_, cores_, poll_seconds_;
  bool warm_up_;
  ServingMetrics* metrics_;
  std::shared_ptr<const QueueOptions> batching_;
  int pool_threads_ = 1;
  bool per_model_ = false;
  std::vector<std::string> resolver_;
  std::mutex mu_;
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread poller_;
};
