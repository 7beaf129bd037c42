// Prometheus metrics with TF Serving's names, label sets and buckets: refserver/metrics.py's
// ServingMetrics, rendered line for line the same.
#pragma once
#include <map>
#include <mutex>
#include <string>
#include <vector>

using Labels = std::vector<std::string>;

// Python's repr() of a float (shortest round trip, its choice of fixed or exponent form).
std::string py_float(double v);

class Counter {
 public:
  Counter(std::string name, std::vector<std::string> labels) : name_(std::move(name)), label_names_(std::move(labels)) {}
  void inc(const Labels& labels, long amount = 1);
  void set(const Labels& labels, long value);
  void render(std::string* out, const char* type = "counter") const;

 protected:
  std::string name_;
  std::vector<std::string> label_names_;
  mutable std::mutex mu_;
  std::map<Labels, long> values_;
};

class Histogram {
 public:
  Histogram(std::string name, std::vector<double> bounds, std::vector<std::string> labels)
      : name_(std::move(name)), label_names_(std::move(labels)), bounds_(std::move(bounds)) {}
  void observe(double value, const Labels& labels = {});
  void render(std::string* out) const;

 private:
  struct Cell {
    std::vector<long> counts;
    double sum = 0;
  };
  std::string name_;
  std::vector<std::string> label_names_;
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::map<Labels, Cell> cells_;
};

struct ServingMetrics {
  ServingMetrics();
  Counter request_count;
  Histogram request_latency, runtime_latency, queuing_latency, input_batch_size, processed_batch_size,
      padding_size;
  Counter wrapped_run_count;
  // reference server only: TF Serving's batch-size histograms have no model label
  Histogram model_input_batch_size, model_processed_batch_size;
  Histogram load_latency;
  Counter model_state;  // a gauge
  std::string render() const;
};
