#include "batcher.h"

#include <chrono>
#include <cstring>
#include <cstdlib>
#include <ctime>
#include <unistd.h>

#include "log.h"

double steady_now() {
  return double(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count()) / 1e9;
}

void Job::finish(const Status& s, std::vector<Tensor>&& outputs) {
  {
    std::lock_guard<std::mutex> g(mu);
    if (finished) return;  // a late piece after a failure
    finished = true;
  }
  done(s, std::move(outputs));
}

namespace {
// Rows [start, start + rows) of a tensor.
Tensor slice(const Tensor& t, int64_t start, int64_t rows) {
  Tensor out;
  out.dtype = t.dtype;
  out.shape = t.shape;
  if (!out.shape.empty()) out.shape[0] = rows;
  if (t.dtype == DT_STRING) {
    int64_t per = t.shape.empty() || !t.shape[0] ? 0 : int64_t(t.strings.size()) / t.shape[0];
    out.strings.assign(t.strings.begin() + start * per, t.strings.begin() + (start + rows) * per);
  } else {
    size_t rb = t.row_bytes();
    out.data.assign(t.data, size_t(start) * rb, size_t(rows) * rb);
  }
  return out;
}

void append_rows(Tensor* dst, const Tensor& src) {
  if (src.dtype == DT_STRING) dst->strings.insert(dst->strings.end(), src.strings.begin(), src.strings.end());
  else dst->data += src.data;
  dst->shape[0] += src.shape[0];
}

// Pads dims 1.. of ``t`` to ``target`` with its first element (as TensorFlow's batching does).
Tensor pad_to(const Tensor& t, const std::vector<int64_t>& target) {
  Tensor out;
  out.dtype = t.dtype;
  out.shape = target;
  out.shape[0] = t.shape[0];
  int64_t n = out.count();
  size_t es = t.dtype == DT_STRING ? 0 : dtype_size(t.dtype);
  if (t.dtype == DT_STRING) out.strings.assign(size_t(n), t.strings.empty() ? std::string() : t.strings[0]);
  else {
    out.data.resize(size_t(n) * es);
    for (int64_t i = 0; i < n; i++)
      if (!t.data.empty()) std::memcpy(&out.data[size_t(i) * es], t.data.data(), es);
      else std::memset(&out.data[size_t(i) * es], 0, es);
  }
  size_t nd = t.shape.size();
  std::vector<int64_t> idx(nd, 0);
  int64_t count = t.count();
  for (int64_t e = 0; e < count; e++) {
    int64_t dst = 0;
    for (size_t k = 0; k < nd; k++) dst = dst * out.shape[k] + idx[k];
    if (t.dtype == DT_STRING) out.strings[size_t(dst)] = t.strings[size_t(e)];
    else std::memcpy(&out.data[size_t(dst) * es], &t.data[size_t(e) * es], es);
    for (size_t k = nd; k-- > 0;) {
      if (++idx[k] < t.shape[k]) break;
      idx[k] = 0;
    }
  }
  return out;
}
}  // namespace

void Job::piece_done(int64_t start, std::vector<Tensor>&& outputs) {
  if (pending == 1) {
    finish(Status::Ok(), std::move(outputs));
    return;
  }
  std::vector<std::pair<int64_t, std::vector<Tensor>>> all;
  {
    std::lock_guard<std::mutex> g(mu);
    parts.emplace_back(start, std::move(outputs));
    if (int(parts.size()) != pending) return;
    all = std::move(parts);
  }
  std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.first < b.first; });
  std::vector<Tensor> merged = std::move(all[0].second);
  for (size_t p = 1; p < all.size(); p++)
    for (size_t i = 0; i < merged.size(); i++) append_rows(&merged[i], all[p].second[i]);
  finish(Status::Ok(), std::move(merged));
}

Batcher::Batcher(BatchingConfig cfg, ServingMetrics* metrics) : cfg_(std::move(cfg)), metrics_(metrics) {
  global_.params = cfg_.params;
  global_.pad_variable_length_inputs = cfg_.pad_variable_length_inputs;
  const char* trace = std::getenv("HARNESS_REFSERVER_BATCH_TRACE");
  if (trace && *trace) trace_path_ = trace;
  for (int i = 0; i < cfg_.num_batch_threads; i++) threads_.emplace_back([this, i] { loop(i); });
}

Batcher::~Batcher() { stop(); }

const QueueOptions& Batcher::options(const policy::Batch& batch) const {
  const auto& model = std::static_pointer_cast<Job>(batch.pieces[0].task->payload)->model;
  return model->batching ? *model->batching : global_;
}

Status Batcher::submit(const std::string& model, int64_t version, const std::string& sig,
                       const std::shared_ptr<Job>& job, int64_t size) {
  auto task = std::make_shared<policy::Task>();
  task->size = size;
  task->payload = job;
  std::lock_guard<std::mutex> g(mu_);
  if (stopping_) return Error(UNAVAILABLE, "Server is shutting down");
  Key key{model, version, sig};
  auto& q = queues_[key];
  if (!q) {  // the version's own options: the global file's, or its batching_params.pbtxt's
    q = std::make_unique<policy::BatchQueue>(job->model->batching ? job->model->batching->params : cfg_.params);
    sched_.add_queue(q.get());
  }
  bool changed = false;
  int verdict = q->schedule(task, steady_now(), &changed);
  if (verdict == policy::ADMIT_OVERSIZE)
    return Invalid("Task size " + std::to_string(size) + " is larger than maximum input batch size " +
                   std::to_string(q->params().max_batch_size));
  if (verdict == policy::ADMIT_QUEUE_FULL) return Error(UNAVAILABLE, policy::QUEUE_FULL_MESSAGE);
  job->pending = task->pieces;
  if (changed && idle_) cv_.notify_one();
  return Status::Ok();
}

void Batcher::retire(const std::string& model, int64_t version) {
  for (;;) {
    {
      std::lock_guard<std::mutex> g(mu_);
      bool empty = true;
      for (auto& kv : queues_)
        if (std::get<0>(kv.first) == model && std::get<1>(kv.first) == version && kv.second->size()) empty = false;
      if (empty) {
        for (auto it = queues_.begin(); it != queues_.end();) {
          if (std::get<0>(it->first) == model && std::get<1>(it->first) == version) {
            sched_.remove_queue(it->second.get());
            it = queues_.erase(it);
          } else {
            ++it;
          }
        }
        return;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void Batcher::stop() {
  std::vector<std::unique_ptr<policy::Batch>> leftovers;
  {
    std::lock_guard<std::mutex> g(mu_);
    if (stopping_) return;
    stopping_ = true;
    for (auto* q : sched_.queues())
      for (auto& b : q->drain()) leftovers.push_back(std::move(b));
  }
  cv_.notify_all();
  for (auto& b : leftovers)
    for (auto& p : b->pieces)
      std::static_pointer_cast<Job>(p.task->payload)->finish(Error(UNAVAILABLE, "Server is shutting down"), {});
  for (auto& t : threads_) t.join();
  write_trace();
}

namespace {
double clock_s(clockid_t id) {
  timespec ts;
  clock_gettime(id, &ts);
  return double(ts.tv_sec) + ts.tv_nsec / 1e9;
}
}  // namespace

void Batcher::run_traced(policy::Batch& batch, double started, int index) {
  double times[3] = {0, 0, 0};
  double wall = steady_now(), cpu = clock_s(CLOCK_THREAD_CPUTIME_ID), process = clock_s(CLOCK_PROCESS_CPUTIME_ID);
  int64_t rows = batch.size, padded = policy::padded_size(batch.size, options(batch).params.allowed_batch_sizes);
  run(batch, started, times);
  if (!times[1]) return;  // refused or failed before the model ran
  char rec[512];
  snprintf(rec, sizeof rec, "[%d,%.9f,%.9f,%lld,%lld,%.9f,%.9f,%.9f,%.9f,%.9f]", index, started, process,
           (long long)rows, (long long)padded, times[0] - wall, times[1] - times[0], times[2], steady_now() - wall,
           clock_s(CLOCK_THREAD_CPUTIME_ID) - cpu);
  std::lock_guard<std::mutex> g(trace_mu_);
  if (trace_.size() < 500000) trace_.push_back(rec);
}

void Batcher::write_trace() {
  if (trace_path_.empty()) return;
  std::string out = trace_path_ + "." + std::to_string(getpid()), tmp = out + ".tmp";
  FILE* f = fopen(tmp.c_str(), "w");
  if (!f) return;
  fputs("{\"fields\": [\"thread\", \"taken\", \"process_cpu\", \"rows\", \"padded\", \"merge_wall_s\", "
        "\"run_wall_s\", \"run_cpu_s\", \"batch_wall_s\", \"batch_cpu_s\"], \"records\": [", f);
  for (size_t i = 0; i < trace_.size(); i++) fprintf(f, "%s%s", i ? ", " : "", trace_[i].c_str());
  fputs("]}", f);
  fclose(f);
  rename(tmp.c_str(), out.c_str());
  logf("Wrote the batch trace to %s", out.c_str());
}

void Batcher::loop(int index) {
  for (;;) {
    std::unique_ptr<policy::Batch> got;
    double now;
    {
      std::unique_lock<std::mutex> lk(mu_);
      for (;;) {
        if (stopping_) return;
        now = steady_now();
        got = sched_.pop_ready(now);
        double due;
        if (got) {
          if (sched_.next_due(&due) && due <= now && idle_) cv_.notify_one();  // more is ready: wake a colleague
          break;
        }
        idle_++;
        if (sched_.next_due(&due))
          cv_.wait_for(lk, std::chrono::duration<double>(std::max(due - now, 0.0)));
        else
          cv_.wait(lk);
        idle_--;
      }
    }
    if (trace_path_.empty()) run(*got, now);
    else run_traced(*got, now, index);
  }
}

Status Batcher::merge(const std::vector<policy::Piece>& pieces, size_t i, int64_t padded, bool pad_variable,
                      Tensor* out) {
  // The common case, numeric pieces of one shape and no padding: each piece's rows copied once,
  // straight into the batch (the general path below copies each piece, then appends it).
  const Tensor& head = std::static_pointer_cast<Job>(pieces[0].task->payload)->inputs[i];
  bool simple = head.dtype != DT_STRING && !head.shape.empty();
  int64_t total = 0;
  for (auto& p : pieces) {
    const Tensor& t = std::static_pointer_cast<Job>(p.task->payload)->inputs[i];
    simple &= t.dtype == head.dtype && t.shape.size() == head.shape.size() &&
              std::equal(t.shape.begin() + 1, t.shape.end(), head.shape.begin() + 1);
    total += p.rows;
  }
  if (simple && total == padded) {
    out->dtype = head.dtype;
    out->shape = head.shape;
    out->shape[0] = total;
    size_t rb = head.row_bytes();
    out->data.clear();
    out->data.reserve(size_t(total) * rb);
    for (auto& p : pieces) {
      const Tensor& t = std::static_pointer_cast<Job>(p.task->payload)->inputs[i];
      out->data.append(t.data, size_t(p.start) * rb, size_t(p.rows) * rb);
    }
    return Status::Ok();
  }
  std::vector<Tensor> parts;
  parts.reserve(pieces.size());
  bool same = true;
  for (auto& p : pieces) {
    const Tensor& t = std::static_pointer_cast<Job>(p.task->payload)->inputs[i];
    parts.push_back(p.start == 0 && p.rows == t.rows() ? t : slice(t, p.start, p.rows));
    const auto& a = parts.front().shape;
    const auto& b = parts.back().shape;
    if (a.size() != b.size() || !std::equal(a.begin() + 1, a.end(), b.begin() + 1)) same = false;
  }
  if (!same) {
    if (!pad_variable)
      return Invalid(
          "Tensors with the same name from different tasks have different shapes and padding is turned off. Set "
          "pad_variable_length_inputs to true, or ensure that all tensors with the same name have equal dimensions "
          "starting with the first dim.");
    std::vector<int64_t> target = parts[0].shape;
    for (auto& p : parts)
      for (size_t k = 1; k < target.size() && k < p.shape.size(); k++) target[k] = std::max(target[k], p.shape[k]);
    for (auto& p : parts)
      if (!std::equal(p.shape.begin() + 1, p.shape.end(), target.begin() + 1)) p = pad_to(p, target);
  }
  *out = std::move(parts[0]);
  for (size_t k = 1; k < parts.size(); k++) append_rows(out, parts[k]);
  int64_t extra = padded - out->shape[0];
  if (extra > 0 && out->shape[0] > 0) {  // pad to an allowed batch size by repeating the first row
    Tensor first = slice(*out, 0, 1);
    for (int64_t k = 0; k < extra; k++) append_rows(out, first);
  }
  return Status::Ok();
}

void Batcher::run(policy::Batch& batch, double started, double* times) {
  std::vector<std::shared_ptr<Job>> jobs;
  for (auto& p : batch.pieces) jobs.push_back(std::static_pointer_cast<Job>(p.task->payload));
  auto fail_all = [&](const Status& s) {
    for (auto& j : jobs) j->finish(s, {});
  };
  bool all_late = true;
  for (auto& j : jobs) all_late &= j->deadline > 0 && j->deadline <= started;
  if (all_late) {
    fail_all(Error(RESOURCE_EXHAUSTED, policy::QUEUE_TIMEOUT_MESSAGE));
    return;
  }
  for (auto& p : batch.pieces)
    metrics_->queuing_latency.observe((started - p.task->enqueue_time) * 1e6, {cfg_.thread_pool_name});
  Job& first = *jobs[0];
  const QueueOptions& opts = options(batch);
  int64_t size = batch.size;
  int64_t padded = policy::padded_size(size, opts.params.allowed_batch_sizes);
  std::vector<Tensor> feeds(first.inputs.size());
  for (size_t i = 0; i < feeds.size(); i++) {
    Status s = merge(batch.pieces, i, padded, opts.pad_variable_length_inputs, &feeds[i]);
    if (!s.ok()) return fail_all(s);
  }
  std::vector<Tensor> outputs;
  double cpu = 0;
  if (times) {
    times[0] = steady_now();
    cpu = clock_s(CLOCK_THREAD_CPUTIME_ID);
  }
  Status s = first.model->run(*first.sig, feeds, &outputs);
  if (!s.ok()) return fail_all(s);
  if (times) {
    times[1] = steady_now();
    times[2] = clock_s(CLOCK_THREAD_CPUTIME_ID) - cpu;
  }
  metrics_->wrapped_run_count.inc({});
  metrics_->input_batch_size.observe(double(size));
  metrics_->processed_batch_size.observe(double(padded));
  metrics_->padding_size.observe(double(padded - size), {std::to_string(padded)});
  metrics_->model_input_batch_size.observe(double(size), {first.model_name});
  metrics_->model_processed_batch_size.observe(double(padded), {first.model_name});
  for (auto& o : outputs)
    if (o.shape.empty() || o.shape[0] != padded)
      return fail_all(Invalid(
          "Batched output tensor's 0th dimension does not equal the sum of the 0th dimension sizes of the input "
          "tensors"));
  int64_t offset = 0;
  for (size_t k = 0; k < batch.pieces.size(); k++) {
    auto& p = batch.pieces[k];
    std::vector<Tensor> mine;
    mine.reserve(outputs.size());
    for (auto& o : outputs) mine.push_back(batch.pieces.size() == 1 && p.rows == o.shape[0] ? o : slice(o, offset, p.rows));
    jobs[k]->piece_done(p.start, std::move(mine));
    offset += p.rows;
  }
}
