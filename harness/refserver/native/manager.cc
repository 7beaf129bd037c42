#include "manager.h"

#include <dirent.h>
#include <rapidjson/document.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <set>

#include "log.h"
#include "preload.h"

extern char** environ;

const char* state_name(int state) {
  switch (state) {
    case S_START: return "START";
    case S_LOADING: return "LOADING";
    case S_AVAILABLE: return "AVAILABLE";
    case S_UNLOADING: return "UNLOADING";
    case S_END: return "END";
  }
  return "UNKNOWN";
}

namespace {
bool is_dir(const std::string& p) {
  struct stat sb;
  return stat(p.c_str(), &sb) == 0 && S_ISDIR(sb.st_mode);
}

// Numeric subdirectories of a model's base path, highest first.
std::vector<int64_t> find_versions(const std::string& base) {
  std::vector<int64_t> out;
  DIR* d = opendir(base.c_str());
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name.empty() || name.size() > 18 || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    if (is_dir(base + "/" + name)) out.push_back(std::stoll(name));
  }
  closedir(d);
  std::sort(out.rbegin(), out.rend());
  return out;
}

// Runs ``argv`` and returns its standard output; false with the reason when it cannot run.
bool run_capture(const std::vector<std::string>& argv, std::string* out, std::string* error) {
  int fds[2];
  if (pipe(fds) != 0) {
    *error = "cannot create a pipe for the batching parameters reader";
    return false;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  posix_spawn_file_actions_addclose(&actions, fds[1]);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  if (rc != 0) {
    close(fds[0]);
    *error = "cannot start the batching parameters reader " + argv[0] + ": " + strerror(rc);
    return false;
  }
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) out->append(buf, size_t(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    *error = "the batching parameters reader failed (exit status " + std::to_string(WEXITSTATUS(status)) + ")";
    return false;
  }
  return true;
}

long json_int(const rapidjson::Value& v, const char* key, long def) {
  auto it = v.FindMember(key);
  return it != v.MemberEnd() && it->value.IsInt64() ? long(it->value.GetInt64()) : def;
}

bool json_bool(const rapidjson::Value& v, const char* key) {
  auto it = v.FindMember(key);
  return it != v.MemberEnd() && it->value.IsBool() && it->value.GetBool();
}

double now_us() {
  return double(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count()) / 1e3;
}

std::string versions_repr(const ModelConfig& c) {
  // Python prints the tuple: (1,) or (1, 2) or ()
  std::string s = "(";
  for (size_t i = 0; i < c.versions.size(); i++) s += (i ? ", " : "") + std::to_string(c.versions[i]);
  if (c.versions.size() == 1) s += ",";
  return s + ")";
}
}  // namespace

std::vector<ModelConfig> models_from_json(const rapidjson::Value& models) {
  std::vector<ModelConfig> out;
  if (!models.IsArray()) return out;
  for (auto& m : models.GetArray()) {
    ModelConfig mc;
    mc.name = m["name"].GetString();
    mc.base_path = m["base_path"].GetString();
    mc.policy = m["policy"].GetString();
    mc.versions.clear();
    for (auto& v : m["versions"].GetArray()) mc.versions.push_back(v.GetInt64());
    for (auto& l : m["labels"].GetArray()) mc.labels.emplace_back(l[0].GetString(), l[1].GetInt64());
    out.push_back(mc);
  }
  return out;
}

std::vector<std::pair<std::string, int64_t>> initial_versions(const std::vector<ModelConfig>& configs) {
  std::vector<std::pair<std::string, int64_t>> out;
  for (auto& c : configs) {
    ServedModel served;
    served.config = c;
    auto wanted = is_dir(c.base_path) ? served.wanted(find_versions(c.base_path)) : std::vector<int64_t>();
    if (wanted.empty()) return out;
    for (int64_t v : wanted) out.emplace_back(c.base_path + "/" + std::to_string(v), v);
  }
  return out;
}

std::vector<int64_t> ServedModel::wanted(const std::vector<int64_t>& found) const {
  if (config.policy == "all") return found;
  std::vector<int64_t> out;
  if (config.policy == "specific") {
    for (int64_t v : found)
      if (std::find(config.versions.begin(), config.versions.end(), v) != config.versions.end()) out.push_back(v);
    return out;
  }
  size_t n = config.versions.empty() ? 1 : size_t(config.versions[0]);
  for (size_t i = 0; i < found.size() && i < n; i++) out.push_back(found[i]);
  return out;
}

ModelManager::ModelManager(std::vector<ModelConfig> configs, int intra, int inter, int cores, int poll_seconds,
                           bool warm_up, ServingMetrics* metrics)
    : intra_(intra), inter_(inter), cores_(cores), poll_seconds_(poll_seconds), warm_up_(warm_up), metrics_(metrics) {
  for (auto& c : configs) {
    order_.push_back(c.name);
    models_[c.name].config = c;
  }
}

ModelManager::~ModelManager() { stop(); }

void ModelManager::set_batching(std::shared_ptr<const QueueOptions> global, int pool_threads, bool per_model,
                                std::vector<std::string> resolver) {
  batching_ = std::move(global);
  pool_threads_ = pool_threads;
  per_model_ = per_model && batching_ != nullptr;
  resolver_ = std::move(resolver);
}

// The version's queue options, as refserver/model_batching.py decides them (it reads the file).
bool ModelManager::queue_options(const std::string& path, std::shared_ptr<const QueueOptions>* out,
                                 std::string* error, std::string* hint) {
  out->reset();
  if (!batching_) return true;
  if (!per_model_) {
    *out = batching_;
    return true;
  }
  std::vector<std::string> argv = resolver_;
  argv.push_back(path);
  argv.push_back(std::to_string(pool_threads_));
  std::string text;
  if (!run_capture(argv, &text, error)) return false;
  rapidjson::Document doc;
  doc.Parse(text.c_str());
  if (doc.HasParseError() || !doc.IsObject()) {
    *error = "the batching parameters reader printed no JSON: " + text.substr(0, 200);
    return false;
  }
  if (doc.HasMember("error")) {
    *error = doc["error"].GetString();
    if (hint && doc.HasMember("hint")) *hint = doc["hint"].GetString();
    return false;
  }
  const auto& b = doc["batching"];
  if (b.IsNull()) {
    logf("Batching for %s: no batching_params.pbtxt: unbatched", path.c_str());
    return true;
  }
  auto q = std::make_shared<QueueOptions>();
  q->params.max_batch_size = json_int(b, "max_batch_size", 1);
  q->params.timeout = double(json_int(b, "batch_timeout_micros", 0)) / 1e6;
  q->params.max_enqueued_batches = json_int(b, "max_enqueued_batches", 1);
  q->params.max_execution_batch_size = json_int(b, "max_execution_batch_size", q->params.max_batch_size);
  q->params.splitting = json_bool(b, "enable_large_batch_splitting");
  for (auto& s : b["allowed_batch_sizes"].GetArray()) q->params.allowed_batch_sizes.push_back(s.GetInt64());
  q->pad_variable_length_inputs = json_bool(b, "pad_variable_length_inputs");
  logf("Batching for %s: batching_params.pbtxt: max_batch_size=%lld", path.c_str(),
       (long long)q->params.max_batch_size);
  *out = q;
  return true;
}

void ModelManager::gauge(const std::string& name, int64_t version, int state) {
  metrics_->model_state.set({name, std::to_string(version)}, state);
}

bool ModelManager::load_initial(std::string* message, std::string* hint) {
  for (auto& name : order_) {
    ServedModel& served = models_[name];
    const std::string& base = served.config.base_path;
    if (!is_dir(base)) {
      *message = "Could not find base path " + base + " for servable " + name;
      *hint = "check --model_base_path (the directory that holds the version directories)";
      return false;
    }
    auto found = find_versions(base);
    if (found.empty()) {
      *message = "No versions of servable " + name + " found under base path " + base;
      *hint = "export the model into a numbered directory such as " + base + "/1";
      return false;
    }
    auto wanted = served.wanted(found);
    if (wanted.empty()) {
      std::vector<int64_t> sorted = found;
      std::sort(sorted.begin(), sorted.end());
      std::string f = "[";
      for (size_t i = 0; i < sorted.size(); i++) f += (i ? ", " : "") + std::to_string(sorted[i]);
      *message = "none of the versions " + versions_repr(served.config) + " of servable " + name + " exist under " +
                 base + "; found " + f + "]";
      hint->clear();
      return false;
    }
    for (int64_t v : wanted) {
      std::string error, why;
      if (!load(served, v, &error, &why)) {
        *message = error;
        *hint = why.empty() ? "check the SavedModel directory" : why;
        return false;
      }
    }
  }
  return true;
}

bool ModelManager::load(ServedModel& served, int64_t version, std::string* error, std::string* hint) {
  const std::string& name = served.config.name;
  {
    std::lock_guard<std::mutex> g(mu_);
    served.status[version] = VersionStatus{version, S_LOADING};
  }
  gauge(name, version, S_LOADING);
  std::string path = served.config.base_path + "/" + std::to_string(version);
  double t0 = now_us();
  std::shared_ptr<const QueueOptions> options;
  std::string why;
  if (!queue_options(path, &options, error, &why)) {
    std::lock_guard<std::mutex> g(mu_);
    served.status[version] = VersionStatus{version, S_END, "UNKNOWN", why.empty() ? *error : *error + " (" + why + ")"};
    gauge(name, version, S_END);
    if (hint) *hint = why;
    return false;
  }
  double load_started = now_us();
  auto model = preload::take(path);
  if (model) {
    logf("SavedModel %s: loaded by the standby before this start", path.c_str());
  } else {
    model = LoadedModel::load(path, version, intra_, inter_, cores_, error);
    if (model)
      logf("SavedModel load for tags { serve }; Status: success: OK. Took %.0f microseconds.", now_us() - load_started);
  }
  if (model) model->batching = options;
  if (!model) {
    std::lock_guard<std::mutex> g(mu_);
    served.status[version] = VersionStatus{version, S_END, "UNKNOWN", *error};
    gauge(name, version, S_END);
    return false;
  }
  if (warm_up_) {
    int count = 0;
    Status s = model->warm_up(&count);
    if (!s.ok()) {
      std::lock_guard<std::mutex> g(mu_);
      if (s.code < 0) {  // not a request failure: the file itself is unusable
        served.status[version] = VersionStatus{version, S_END, "UNKNOWN", s.message};
        *error = s.message;
      } else {
        served.status[version] = VersionStatus{version, S_END, code_name(s.code), "warm-up failed: " + s.message};
        *error = "warm-up of " + path + " failed: " + s.message;
      }
      gauge(name, version, S_END);
      return false;
    }
  }
  metrics_->load_latency.observe(now_us() - t0, {path});
  {
    std::lock_guard<std::mutex> g(mu_);
    served.loaded[version] = model;
    served.status[version] = VersionStatus{version, S_AVAILABLE};
    served.latest = served.loaded.rbegin()->second;
  }
  gauge(name, version, S_AVAILABLE);
  logf("Successfully loaded servable version {name: %s version: %lld}", name.c_str(), (long long)version);
  return true;
}

void ModelManager::unload(ServedModel& served, int64_t version) {
  const std::string& name = served.config.name;
  std::shared_ptr<LoadedModel> model;
  {
    std::lock_guard<std::mutex> g(mu_);
    auto it = served.loaded.find(version);
    if (it != served.loaded.end()) {
      model = it->second;
      served.loaded.erase(it);
    }
    served.status[version] = VersionStatus{version, S_UNLOADING};
    served.latest = served.loaded.empty() ? nullptr : served.loaded.rbegin()->second;
  }
  gauge(name, version, S_UNLOADING);
  if (on_retire) on_retire(name, version);
  model.reset();  // requests still holding it keep it alive until they finish
  {
    std::lock_guard<std::mutex> g(mu_);
    served.status[version] = VersionStatus{version, S_END};
  }
  gauge(name, version, S_END);
  logf("Unloaded servable version {name: %s version: %lld}", name.c_str(), (long long)version);
}

void ModelManager::start_polling() {
  if (poll_seconds_ <= 0) return;
  poller_ = std::thread([this] {
    std::unique_lock<std::mutex> lk(stop_mu_);
    while (!stop_cv_.wait_for(lk, std::chrono::seconds(poll_seconds_), [this] { return stopping_; })) {
      lk.unlock();
      poll_once();
      lk.lock();
    }
  });
}

void ModelManager::poll_once() {
  for (auto& name : order_) {
    ServedModel& served = models_[name];
    auto found = find_versions(served.config.base_path);
    auto wanted_v = served.wanted(found);
    std::set<int64_t> wanted(wanted_v.begin(), wanted_v.end());
    for (int64_t v : wanted) {
      bool have, ended;
      {
        std::lock_guard<std::mutex> g(mu_);
        have = served.loaded.count(v) > 0;
        auto it = served.status.find(v);
        ended = it != served.status.end() && it->second.state == S_END;
      }
      if (have || ended) continue;  // failed or unloaded before: do not retry forever
      std::string error;
      if (!load(served, v, &error))
        logerr("Loading servable %s version %lld failed: %s", name.c_str(), (long long)v, error.c_str());
    }
    if (wanted.empty()) continue;  // directory emptied: keep serving what we have, as TF Serving does
    std::vector<int64_t> extra;
    {
      std::lock_guard<std::mutex> g(mu_);
      for (auto& kv : served.loaded)
        if (!wanted.count(kv.first)) extra.push_back(kv.first);
    }
    for (int64_t v : extra) {
      size_t n;
      {
        std::lock_guard<std::mutex> g(mu_);
        n = served.loaded.size();
      }
      if (n > 1) unload(served, v);
    }
  }
}

void ModelManager::stop() {
  {
    std::lock_guard<std::mutex> g(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (poller_.joinable()) poller_.join();
}

Status ModelManager::resolve(const std::string& name, int version_case, int64_t version, const std::string& label,
                             std::shared_ptr<LoadedModel>* out) {
  std::lock_guard<std::mutex> g(mu_);
  auto it = models_.find(name);
  ServedModel* served = it == models_.end() ? nullptr : &it->second;
  bool specific = version_case == 2;
  if (version_case == 4) {
    bool found = false;
    if (served)
      for (auto& kv : served->config.labels)
        if (kv.first == label) {
          version = kv.second;
          found = true;
        }
    if (!found)
      return served ? Error(INVALID_ARGUMENT, "Unrecognized servable version label: " + label)
                    : Error(NOT_FOUND, "Servable not found for request: Label(" + name + ", " + label + ")");
    specific = true;
  }
  if (served) {
    std::shared_ptr<LoadedModel> m;
    if (!specific) m = served->latest;
    else {
      auto mi = served->loaded.find(version);
      if (mi != served->loaded.end()) m = mi->second;
    }
    if (m) {
      *out = m;
      return Status::Ok();
    }
  }
  std::string what = !specific ? "Latest(" + name + ")" : "Specific(" + name + ", " + std::to_string(version) + ")";
  return Error(NOT_FOUND, "Servable not found for request: " + what);
}

Status ModelManager::statuses(const std::string& name, int version_case, int64_t version, const std::string& label,
                              std::vector<VersionStatus>* out) {
  std::lock_guard<std::mutex> g(mu_);
  auto it = models_.find(name);
  if (it == models_.end()) return Error(NOT_FOUND, "Could not find any versions of model " + name);
  ServedModel& served = it->second;
  bool specific = version_case == 2;
  if (version_case == 4) {
    bool found = false;
    for (auto& kv : served.config.labels)
      if (kv.first == label) {
        version = kv.second;
        found = true;
      }
    if (!found) return Error(INVALID_ARGUMENT, "Unrecognized servable version label: " + label);
    specific = true;
  }
  if (specific) {
    auto si = served.status.find(version);
    if (si == served.status.end())
      return Error(NOT_FOUND, "Could not find version " + std::to_string(version) + " of model " + name);
    out->push_back(si->second);
    return Status::Ok();
  }
  for (auto si = served.status.rbegin(); si != served.status.rend(); ++si) out->push_back(si->second);
  return Status::Ok();
}
