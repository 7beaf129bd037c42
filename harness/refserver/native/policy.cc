#include "policy.h"

#include <algorithm>

namespace policy {

const char* const QUEUE_FULL_MESSAGE = "The batch scheduling queue to which this task was submitted is full";
const char* const QUEUE_TIMEOUT_MESSAGE = "Run() timeout exceeded while waiting in batching queue";

Admission admit(int64_t size, int64_t open_size, bool has_open, int64_t queued, int64_t max_input, int64_t max_exec,
                int64_t max_enqueued, bool splitting) {
  int64_t room = has_open ? max_exec - open_size : 0;
  if (size > max_input) return {ADMIT_OVERSIZE, 0, room};
  int64_t new_batches;
  if (size <= room) new_batches = 0;
  else if (splitting) new_batches = (size - room + max_exec - 1) / max_exec;
  else new_batches = 1;
  if (queued + new_batches > max_enqueued) return {ADMIT_QUEUE_FULL, 0, room};
  return {ADMIT_OK, new_batches, room};
}

double ready_time(int64_t queued, int64_t front_size, double front_first, int64_t max_exec, double timeout) {
  if (queued > 1 || front_size >= max_exec || timeout == 0) return front_first;
  return front_first + timeout;
}

bool open_batch_ready(int64_t open_size, int64_t max_exec, double timeout) {
  return ready_time(1, open_size, 0.0, max_exec, timeout) == 0.0;
}

int64_t padded_size(int64_t size, const std::vector<int64_t>& allowed) {
  for (int64_t s : allowed)
    if (s >= size) return s;
  return size;
}

void Batch::add(const std::shared_ptr<Task>& task, int64_t start, int64_t rows, double now) {
  if (pieces.empty()) first_enqueue = now;
  pieces.push_back(Piece{task, start, rows});
  size += rows;
}

int BatchQueue::schedule(const std::shared_ptr<Task>& task, double now, bool* changed) {
  int64_t size = task->size;
  Batch* open = batches_.empty() ? nullptr : batches_.back().get();
  const Params& p = params_;
  int64_t max_exec = p.max_execution_batch_size;
  Admission a = admit(size, open ? open->size : 0, open != nullptr, int64_t(batches_.size()), p.max_batch_size, max_exec,
                      p.max_enqueued_batches, p.splitting);
  if (a.verdict != ADMIT_OK) return a.verdict;
  task->enqueue_time = now;
  if (a.new_batches == 0) {
    open->add(task, 0, size, now);
    *changed = open_batch_ready(open->size, max_exec, p.timeout);
    return ADMIT_OK;
  }
  *changed = true;
  if (!p.splitting) {
    auto b = std::make_unique<Batch>();
    b->add(task, 0, size, now);
    batches_.push_back(std::move(b));
    return ADMIT_OK;
  }
  int64_t start = 0;
  int pieces = 0;
  if (a.room > 0) {
    open->add(task, 0, a.room, now);
    start = a.room;
    pieces = 1;
  }
  while (start < size) {
    int64_t rows = std::min(max_exec, size - start);
    auto b = std::make_unique<Batch>();
    b->add(task, start, rows, now);
    batches_.push_back(std::move(b));
    start += rows;
    pieces++;
  }
  task->pieces = pieces;
  return ADMIT_OK;
}

bool BatchQueue::due_time(double* due) const {
  if (batches_.empty()) return false;
  const Batch& front = *batches_.front();
  *due = ready_time(int64_t(batches_.size()), front.size, front.first_enqueue, params_.max_execution_batch_size,
                    params_.timeout);
  return true;
}

std::unique_ptr<Batch> BatchQueue::pop_ready(double now) {
  double due;
  if (!due_time(&due) || due > now) return nullptr;
  auto b = std::move(batches_.front());
  batches_.pop_front();
  return b;
}

std::vector<std::unique_ptr<Batch>> BatchQueue::drain() {
  std::vector<std::unique_ptr<Batch>> out;
  for (auto& b : batches_) out.push_back(std::move(b));
  batches_.clear();
  return out;
}

std::vector<std::unique_ptr<Batch>> Scheduler::remove_queue(BatchQueue* q) {
  auto it = std::find(queues_.begin(), queues_.end(), q);
  if (it != queues_.end()) {
    queues_.erase(it);
    next_ = 0;
  }
  return q->drain();
}

std::unique_ptr<Batch> Scheduler::pop_ready(double now, BatchQueue** from) {
  size_t n = queues_.size();
  for (size_t i = 0; i < n; i++) {
    BatchQueue* q = queues_[(next_ + i) % n];
    auto b = q->pop_ready(now);
    if (b) {
      next_ = (next_ + i + 1) % n;
      if (from) *from = q;
      return b;
    }
  }
  return nullptr;
}

bool Scheduler::next_due(double* due) const {
  bool any = false;
  for (BatchQueue* q : queues_) {
    double d;
    if (q->due_time(&d)) {
      if (!any || d < *due) *due = d;
      any = true;
    }
  }
  return any;
}

}  // namespace policy
