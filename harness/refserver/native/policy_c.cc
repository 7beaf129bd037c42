// A C entry point to the native policy, for tests/refserver/test_native_policy.py (ctypes): the
// same arrivals go through this and through harness/scheduler.py, batch by batch.
#include <memory>
#include <vector>

#include "policy.h"

namespace {
struct Sim {
  policy::Scheduler sched;
  std::vector<std::unique_ptr<policy::BatchQueue>> queues;
};
}  // namespace

extern "C" {
void* policy_new() { return new Sim(); }
void policy_free(void* s) { delete static_cast<Sim*>(s); }

int policy_add_queue(void* s, long max_batch_size, long timeout_micros, long max_enqueued, long max_exec, int splitting,
                     const long* allowed, int n_allowed) {
  auto* sim = static_cast<Sim*>(s);
  policy::Params p;
  p.max_batch_size = max_batch_size;
  p.timeout = double(timeout_micros) / 1e6;
  p.max_enqueued_batches = max_enqueued;
  p.max_execution_batch_size = max_exec;
  p.splitting = splitting != 0;
  p.allowed_batch_sizes.assign(allowed, allowed + n_allowed);
  sim->queues.push_back(std::make_unique<policy::BatchQueue>(p));
  sim->sched.add_queue(sim->queues.back().get());
  return int(sim->queues.size()) - 1;
}

// Returns the verdict (0 admitted, 1 oversize, 2 queue full); *changed as BatchQueue.schedule's.
int policy_schedule(void* s, int queue, long task_id, long size, double now, int* changed, int* pieces) {
  auto* sim = static_cast<Sim*>(s);
  auto task = std::make_shared<policy::Task>();
  task->size = size;
  task->payload = std::make_shared<long>(task_id);
  bool ch = false;
  int v = sim->queues[size_t(queue)]->schedule(task, now, &ch);
  *changed = ch;
  *pieces = task->pieces;
  return v;
}

// Pops the next ready batch: returns its piece count (-1: none), fills its queue, padded size
// and (task_id, start, rows) triples (at most cap of them).
int policy_pop_ready(void* s, double now, int* queue, long* padded, long* triples, int cap) {
  auto* sim = static_cast<Sim*>(s);
  policy::BatchQueue* from = nullptr;
  auto b = sim->sched.pop_ready(now, &from);
  if (!b) return -1;
  for (size_t i = 0; i < sim->queues.size(); i++)
    if (sim->queues[i].get() == from) *queue = int(i);
  *padded = policy::padded_size(b->size, from->params().allowed_batch_sizes);
  int n = 0;
  for (auto& p : b->pieces) {
    if (n < cap) {
      triples[3 * n] = *std::static_pointer_cast<long>(p.task->payload);
      triples[3 * n + 1] = p.start;
      triples[3 * n + 2] = p.rows;
    }
    n++;
  }
  return n;
}

int policy_next_due(void* s, double* due) { return static_cast<Sim*>(s)->sched.next_due(due) ? 1 : 0; }
}
