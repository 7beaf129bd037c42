#include "manager.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <set>

#include "log.h"

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
      std::string error;
      if (!load(served, v, &error)) {
        *message = error;
        *hint = "check the SavedModel directory";
        return false;
      }
    }
  }
  return true;
}

bool ModelManager::load(ServedModel& served, int64_t version, std::string* error) {
  const std::string& name = served.config.name;
  {
    std::lock_guard<std::mutex> g(mu_);
    served.status[version] = VersionStatus{version, S_LOADING};
  }
  gauge(name, version, S_LOADING);
  std::string path = served.config.base_path + "/" + std::to_string(version);
  double t0 = now_us();
  auto model = LoadedModel::load(path, version, intra_, inter_, cores_, error);
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
