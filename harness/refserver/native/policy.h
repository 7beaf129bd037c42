// TF Serving's batch-forming rules, ported from harness/scheduler.py rule for rule: the scalar
// rules (admit, ready_time, padded_size) and the BatchQueue/Scheduler that apply them. No
// threads, no clock: every call takes ``now``. tests/refserver/test_native_policy.py feeds the
// same arrivals into this and into scheduler.py and compares them batch by batch.
#pragma once
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

namespace policy {

enum Verdict { ADMIT_OK = 0, ADMIT_OVERSIZE = 1, ADMIT_QUEUE_FULL = 2 };

extern const char* const QUEUE_FULL_MESSAGE;
extern const char* const QUEUE_TIMEOUT_MESSAGE;

struct Params {
  int64_t max_batch_size = 0;
  double timeout = 0;  // seconds
  int64_t max_enqueued_batches = 0;
  int64_t max_execution_batch_size = 0;
  bool splitting = false;
  std::vector<int64_t> allowed_batch_sizes;
};

struct Admission {
  int verdict;
  int64_t new_batches;
  int64_t room;
};

Admission admit(int64_t size, int64_t open_size, bool has_open, int64_t queued, int64_t max_input, int64_t max_exec,
                int64_t max_enqueued, bool splitting);
bool open_batch_ready(int64_t open_size, int64_t max_exec, double timeout);
double ready_time(int64_t queued, int64_t front_size, double front_first, int64_t max_exec, double timeout);
int64_t padded_size(int64_t size, const std::vector<int64_t>& allowed);

struct Task {
  int64_t size = 0;
  double enqueue_time = 0;
  int pieces = 1;
  std::shared_ptr<void> payload;
};

struct Piece {
  std::shared_ptr<Task> task;
  int64_t start;
  int64_t rows;
};

struct Batch {
  std::vector<Piece> pieces;
  int64_t size = 0;
  double first_enqueue = 0;
  void add(const std::shared_ptr<Task>& task, int64_t start, int64_t rows, double now);
};

class BatchQueue {
 public:
  explicit BatchQueue(Params p) : params_(std::move(p)) {}
  size_t size() const { return batches_.size(); }
  // Enqueues or refuses (returns the verdict); *changed as scheduler.py's return value.
  int schedule(const std::shared_ptr<Task>& task, double now, bool* changed);
  bool due_time(double* due) const;
  std::unique_ptr<Batch> pop_ready(double now);
  std::vector<std::unique_ptr<Batch>> drain();
  const Params& params() const { return params_; }

 private:
  Params params_;
  std::deque<std::unique_ptr<Batch>> batches_;
};

class Scheduler {
 public:
  void add_queue(BatchQueue* q) { queues_.push_back(q); }
  std::vector<std::unique_ptr<Batch>> remove_queue(BatchQueue* q);
  // The next ready batch, round-robin over the queues, with its queue.
  std::unique_ptr<Batch> pop_ready(double now, BatchQueue** from = nullptr);
  bool next_due(double* due) const;
  const std::vector<BatchQueue*>& queues() const { return queues_; }

 private:
  std::vector<BatchQueue*> queues_;
  size_t next_ = 0;
};

}  // namespace policy
