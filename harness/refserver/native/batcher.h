// Drives the policy with real threads and time, and runs the batches it forms: one pool of
// num_batch_threads threads for every model, a queue per (model, version, signature), as
// refserver/batcher.py. Requests never block here: a job carries the callback that answers it.
#pragma once
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "metrics.h"
#include "model.h"
#include "policy.h"

using Done = std::function<void(const Status&, std::vector<Tensor>&&)>;

struct Job {
  std::shared_ptr<LoadedModel> model;
  std::string model_name;
  const Signature* sig = nullptr;
  std::vector<Tensor> inputs;
  double deadline = 0;  // steady seconds; 0: none
  Done done;
  // pieces of a split job finish on any thread; the first outcome wins
  std::mutex mu;
  int pending = 1;
  bool finished = false;
  std::vector<std::pair<int64_t, std::vector<Tensor>>> parts;

  void finish(const Status& s, std::vector<Tensor>&& outputs);
  void piece_done(int64_t start, std::vector<Tensor>&& outputs);
};

struct BatchingConfig {
  policy::Params params;
  int num_batch_threads = 1;
  bool pad_variable_length_inputs = false;
  std::string thread_pool_name = "shared_batch_scheduler";
};

double steady_now();

class Batcher {
 public:
  Batcher(BatchingConfig cfg, ServingMetrics* metrics);
  ~Batcher();
  // Enqueues a job of ``size`` rows, or returns the refusal.
  Status submit(const std::string& model, int64_t version, const std::string& sig, const std::shared_ptr<Job>& job,
                int64_t size);
  void retire(const std::string& model, int64_t version);
  void stop();

 private:
  using Key = std::tuple<std::string, int64_t, std::string>;
  void loop(int index);
  // times (when not null): merge done, run done (steady s), the run's thread CPU (s)
  void run(policy::Batch& batch, double started, double* times = nullptr);
  void run_traced(policy::Batch& batch, double started, int index);
  void write_trace();
  Status merge(const std::vector<policy::Piece>& pieces, size_t i, int64_t padded, bool pad_variable, Tensor* out);
  // The options of the version a batch belongs to (every job in it has the same model).
  const QueueOptions& options(const policy::Batch& batch) const;

  BatchingConfig cfg_;
  QueueOptions global_;  // for a version the manager gave no options (not expected)
  ServingMetrics* metrics_;
  policy::Scheduler sched_;
  std::map<Key, std::unique_ptr<policy::BatchQueue>> queues_;
  std::mutex mu_;
  std::condition_variable cv_;
  int idle_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
  // $HARNESS_REFSERVER_BATCH_TRACE (refserver/batch_trace.py's records and file format)
  std::string trace_path_;
  std::mutex trace_mu_;
  std::vector<std::string> trace_;
};
