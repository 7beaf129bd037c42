// harness-refserver-native: the reference server's compiled request path. The `harness serve`
// launcher (refserver/native_launch.py) reads TF Serving's flags and files, checks them with
// the Python code every other part of the harness uses, and starts this program with the
// resolved settings as one JSON document (--config=JSON). Everything from there on, loading
// models, the request path, batching, metrics, runs here.
#include <absl/synchronization/mutex.h>
#include <rapidjson/document.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "batcher.h"
#include "grpc_front.h"
#include "log.h"
#include "manager.h"
#include "predictor.h"
#include "preload.h"
#include "rest_front.h"
#include "standby.h"
#include "tfapi.h"

namespace {
int fail(const std::string& message, const std::string& hint = "") {
  std::string text = hint.empty() ? message : message + " (" + hint + ")";
  logerr("%s", text.c_str());
  fprintf(stderr, "error: %s\n", text.c_str());
  fflush(stderr);
  return 1;
}

long geti(const rapidjson::Value& v, const char* key, long def) {
  auto it = v.FindMember(key);
  return it != v.MemberEnd() && it->value.IsInt64() ? long(it->value.GetInt64()) : def;
}

std::string gets(const rapidjson::Value& v, const char* key) {
  auto it = v.FindMember(key);
  return it != v.MemberEnd() && it->value.IsString() ? std::string(it->value.GetString()) : std::string();
}

bool getb(const rapidjson::Value& v, const char* key) {
  auto it = v.FindMember(key);
  return it != v.MemberEnd() && it->value.IsBool() && it->value.GetBool();
}
}  // namespace

int serve(const std::string& config, double tf_open_ms);

int main(int argc, char** argv) {
  if (argc == 2 && strcmp(argv[1], "--standby") == 0) {
    StartRequest req;
    double tf_open_ms = 0;
    if (!standby::wait(&req, &tf_open_ms)) _exit(0);  // nobody will ask: the fork server is gone
    // taken: the fork server reports this process as the server (before the log replaces stdout)
    ssize_t acked = write(1, "\n", 1);
    (void)acked;
    std::string config = standby::become(req);
    if (config.empty()) return fail("harness-refserver-native takes --config=JSON", "start it with `harness serve`");
    return serve(config, tf_open_ms);
  }
  std::string config;
  for (int i = 1; i < argc; i++)
    if (strncmp(argv[i], "--config=", 9) == 0) config = argv[i] + 9;
  if (config.empty()) return fail("harness-refserver-native takes --config=JSON", "start it with `harness serve`");
  return serve(config, -1);
}

// tf_open_ms: how long a standby took to open TensorFlow before the request; -1: opened here.
int serve(const std::string& config, double tf_open_ms) {
  rapidjson::Document cfg;
  cfg.Parse(config.c_str());
  if (cfg.HasParseError() || !cfg.IsObject()) return fail("--config is not a JSON object");

  // Signals are taken by the main thread only (sigwait below), so every thread starts with them blocked.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // Debian's abseil checks every gRPC mutex for lock-order cycles (measured with perf: ~2.5% of
  // the server's CPU under unbatched load, in GraphCycles); TF Serving's build has it off.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  std::string error;
  double opened = steady_now();
  if (!tfapi::load(&error)) return fail(error, "is TensorFlow installed in this Python environment?");
  if (tf_open_ms < 0) logf("Opened TensorFlow's C API in %.0f ms", (steady_now() - opened) * 1e3);
  else logf("Opened TensorFlow's C API in %.0f ms, in a standby process before this start", tf_open_ms);

  int cores = int(geti(cfg, "cores", 1));
  std::vector<ModelConfig> models = models_from_json(cfg["models"]);
  auto metrics = std::make_unique<ServingMetrics>();
  std::unique_ptr<Batcher> batcher;
  policy::Params batcher_params;
  if (cfg.HasMember("batching") && cfg["batching"].IsObject()) {
    const auto& b = cfg["batching"];
    BatchingConfig bc;
    bc.params.max_batch_size = geti(b, "max_batch_size", 1);
    bc.params.timeout = double(geti(b, "batch_timeout_micros", 0)) / 1e6;
    bc.params.max_enqueued_batches = geti(b, "max_enqueued_batches", 1);
    bc.params.max_execution_batch_size = geti(b, "max_execution_batch_size", bc.params.max_batch_size);
    bc.params.splitting = getb(b, "enable_large_batch_splitting");
    for (auto& s : b["allowed_batch_sizes"].GetArray()) bc.params.allowed_batch_sizes.push_back(s.GetInt64());
    bc.num_batch_threads = int(geti(b, "num_batch_threads", 1));
    bc.pad_variable_length_inputs = getb(b, "pad_variable_length_inputs");
    std::string pool = gets(b, "thread_pool_name");
    if (!pool.empty()) bc.thread_pool_name = pool;
    batcher_params = bc.params;
    batcher = std::make_unique<Batcher>(bc, metrics.get());
  }
  ModelManager manager(models, int(geti(cfg, "intra_op", 0)), int(geti(cfg, "inter_op", 0)), cores,
                       int(geti(cfg, "poll_seconds", 1)), getb(cfg, "warm_up"), metrics.get());
  if (batcher) {
    auto global = std::make_shared<QueueOptions>();
    const auto& b = cfg["batching"];
    global->params = batcher_params;
    global->pad_variable_length_inputs = getb(b, "pad_variable_length_inputs");
    std::vector<std::string> resolver;
    auto it = cfg.FindMember("batching_resolver");
    if (it != cfg.MemberEnd() && it->value.IsArray())
      for (auto& a : it->value.GetArray()) resolver.push_back(a.GetString());
    bool per_model = getb(cfg, "per_model_batching");
    if (per_model && resolver.empty()) return fail("per-model batching needs batching_resolver in --config");
    manager.set_batching(global, int(geti(b, "num_batch_threads", 1)), per_model, resolver);
  }
  if (batcher) manager.on_retire = [&](const std::string& n, int64_t v) { batcher->retire(n, v); };
  std::string message, hint;
  bool loaded = manager.load_initial(&message, &hint);
  preload::release();
  if (!loaded) return fail(message, hint);
  manager.start_polling();
  Predictor predictor(&manager, batcher.get(), metrics.get());

  std::string bind = gets(cfg, "bind_address");
  long grpc_port = geti(cfg, "port", 8500);
  std::string address = (bind.find(':') != std::string::npos ? "[" + bind + "]" : bind) + ":" + std::to_string(grpc_port);
  GrpcFront grpc(&predictor, int(geti(cfg, "grpc_threads", cores + 1)), int(geti(cfg, "grpc_pending_calls", 256)));
  if (!grpc.start(address, &error)) return fail(error, "pick a free --port or stop the other server");
  logf("Running gRPC ModelServer at %s:%ld ...", bind.c_str(), grpc_port);
  std::unique_ptr<RestFront> rest;
  long rest_port = geti(cfg, "rest_api_port", 0);
  if (rest_port) {
    RestOptions ro;
    ro.bind_address = bind;
    ro.port = int(rest_port);
    ro.threads = int(geti(cfg, "rest_threads", cores));
    ro.timeout_s = double(geti(cfg, "rest_api_timeout_in_ms", 30000)) / 1e3;
    ro.metrics_path = gets(cfg, "metrics_path");
    ro.max_body = geti(cfg, "rest_api_max_request_bytes", 256 << 20);
    rest = std::make_unique<RestFront>(&predictor, ro);
    if (!rest->start(&error)) return fail(error, "pick a free --rest_api_port or stop the other server");
    logf("Exporting HTTP/REST API at:localhost:%ld ...", rest_port);
  }
  int sig = 0;
  sigwait(&sigs, &sig);
  logf("Shutting down on signal");
  grpc.stop();
  if (rest) rest->stop();
  if (batcher) batcher->stop();
  manager.stop();
  fflush(stderr);
  // TensorFlow's own teardown of the sessions adds nothing a restart needs
  _exit(0);
}
