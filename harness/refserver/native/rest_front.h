// TF Serving's REST API on a small epoll HTTP/1.1 server (refserver/rest.py, the same routes,
// limits, codes and messages). Each of ``threads`` event loops accepts its own connections; a
// request without batching runs on its loop, a batched one is answered when its batch has run.
#pragma once
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "predictor.h"

struct RestOptions {
  std::string bind_address = "127.0.0.1";
  int port = 0;
  int threads = 1;
  double timeout_s = 30;
  std::string metrics_path;  // empty: no Prometheus page
  int64_t max_body = 256 << 20;
};

class RestFront {
 public:
  RestFront(Predictor* p, RestOptions opts) : p_(p), opts_(std::move(opts)) {}
  bool start(std::string* error);
  void stop();

 private:
  Predictor* p_;
  RestOptions opts_;
  int listen_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::vector<std::thread> threads_;
  friend class RestLoop;
};
