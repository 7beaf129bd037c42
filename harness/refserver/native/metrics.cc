#include "metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>

namespace {
std::vector<double> exponential(double scale, double growth, int count) {
  std::vector<double> out;
  for (int i = 0; i < count; i++) out.push_back(scale * std::pow(growth, i));
  return out;
}

std::string fmt(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e18) return std::to_string((long long)v);
  return py_float(v);
}

std::string labels_text(const std::vector<std::string>& names, const Labels& values) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < values.size(); i++) {
    if (i) out += ",";
    out += names[i] + "=\"";
    for (char c : values[i]) {
      if (c == '\\') out += "\\\\";
      else if (c == '"') out += "\\\"";
      else out += c;
    }
    out += "\"";
  }
  return out;
}
}  // namespace

std::string py_float(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string s(buf, res.ptr);
  std::string sign;
  if (s[0] == '-') {
    sign = "-";
    s.erase(0, 1);
  }
  size_t e = s.find('e');
  std::string mant = s.substr(0, e);
  int exp10 = std::atoi(s.c_str() + e + 1);
  std::string digits;
  for (char c : mant)
    if (c != '.') digits += c;
  int decpt = exp10 + 1;
  if (decpt <= -4 || decpt > 16) {
    std::string m = digits.substr(0, 1);
    if (digits.size() > 1) m += "." + digits.substr(1);
    char eb[16];
    snprintf(eb, sizeof eb, "e%c%02d", exp10 < 0 ? '-' : '+', std::abs(exp10));
    return sign + m + eb;
  }
  std::string out;
  if (decpt <= 0) {
    out = "0." + std::string(size_t(-decpt), '0') + digits;
  } else if (size_t(decpt) >= digits.size()) {
    out = digits + std::string(size_t(decpt) - digits.size(), '0') + ".0";
  } else {
    out = digits.substr(0, size_t(decpt)) + "." + digits.substr(size_t(decpt));
  }
  return sign + out;
}

void Counter::inc(const Labels& labels, long amount) {
  std::lock_guard<std::mutex> g(mu_);
  values_[labels] += amount;
}

void Counter::set(const Labels& labels, long value) {
  std::lock_guard<std::mutex> g(mu_);
  values_[labels] = value;
}

void Counter::render(std::string* out, const char* type) const {
  std::lock_guard<std::mutex> g(mu_);
  *out += "# TYPE " + name_ + " " + type + "\n";
  for (auto& kv : values_) *out += name_ + "{" + labels_text(label_names_, kv.first) + "} " + std::to_string(kv.second) + "\n";
}

void Histogram::observe(double value, const Labels& labels) {
  size_t i = size_t(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  std::lock_guard<std::mutex> g(mu_);
  Cell& cell = cells_[labels];
  if (cell.counts.empty()) cell.counts.assign(bounds_.size() + 1, 0);
  cell.counts[i]++;
  cell.sum += value;
}

void Histogram::render(std::string* out) const {
  std::lock_guard<std::mutex> g(mu_);
  *out += "# TYPE " + name_ + " histogram\n";
  for (auto& kv : cells_) {
    std::string lab = labels_text(label_names_, kv.first);
    std::string prefix = name_ + "_bucket{" + lab + (lab.empty() ? "" : ",");
    long total = 0;
    for (size_t i = 0; i < bounds_.size(); i++) {
      total += kv.second.counts[i];
      *out += prefix + "le=\"" + fmt(bounds_[i]) + "\"} " + std::to_string(total) + "\n";
    }
    total += kv.second.counts[bounds_.size()];
    *out += prefix + "le=\"+Inf\"} " + std::to_string(total) + "\n";
    *out += name_ + "_sum{" + lab + "} " + fmt(kv.second.sum) + "\n";
    *out += name_ + "_count{" + lab + "} " + std::to_string(total) + "\n";
  }
}

ServingMetrics::ServingMetrics()
    : request_count(":tensorflow:serving:request_count", {"model_name", "status"}),
      request_latency(":tensorflow:serving:request_latency", exponential(10, 1.8, 33), {"model_name", "API", "entrypoint"}),
      runtime_latency(":tensorflow:serving:runtime_latency", exponential(10, 1.8, 33), {"model_name", "API", "runtime"}),
      queuing_latency(":tensorflow:serving:batching_session:queuing_latency", exponential(100, 1.2, 52), {"thread_pool_name"}),
      input_batch_size(":tensorflow:serving:batching_session:input_batch_size", exponential(1, 2, 14), {}),
      processed_batch_size(":tensorflow:serving:batching_session:processed_batch_size", exponential(1, 2, 14), {}),
      padding_size(":tensorflow:serving:batching_session:padding_size", exponential(1, 2, 14), {"execution_batch_size"}),
      wrapped_run_count(":tensorflow:serving:batching_session:wrapped_run_count", {}),
      model_input_batch_size(":refserver:batching_session:input_batch_size", exponential(1, 2, 14), {"model_name"}),
      model_processed_batch_size(":refserver:batching_session:processed_batch_size", exponential(1, 2, 14),
                                 {"model_name"}),
      load_latency(":tensorflow:cc:saved_model:load_latency", exponential(10, 1.8, 33), {"model_path"}),
      model_state(":tensorflow:serving:model_version_state", {"model_name", "version"}) {}

std::string ServingMetrics::render() const {
  std::string out;
  request_count.render(&out);
  request_latency.render(&out);
  runtime_latency.render(&out);
  queuing_latency.render(&out);
  input_batch_size.render(&out);
  processed_batch_size.render(&out);
  padding_size.render(&out);
  wrapped_run_count.render(&out);
  model_input_batch_size.render(&out);
  model_processed_batch_size.render(&out);
  load_latency.render(&out);
  model_state.render(&out, "gauge");
  return out;
}
