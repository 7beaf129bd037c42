#include "preload.h"

#include <dirent.h>
#include <rapidjson/document.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <thread>

#include "log.h"
#include "manager.h"

namespace {
struct Plan {
  int intra = 0, inter = 0, cores = 0;
  std::vector<std::pair<std::string, int64_t>> versions;
  bool operator==(const Plan& o) const {
    return intra == o.intra && inter == o.inter && cores == o.cores && versions == o.versions;
  }
};

struct Loaded {
  std::string path, files;
  std::shared_ptr<LoadedModel> model;
};

struct State {
  bool started = false;
  Plan plan;
  std::thread loader;
  pid_t loader_tid = 0;
  double seconds = 0;
  std::mutex mu;
  std::vector<Loaded> loaded;
} g;

bool plan_of(const std::string& config, Plan* out) {
  rapidjson::Document cfg;
  cfg.Parse(config.c_str());
  if (cfg.HasParseError() || !cfg.IsObject() || !cfg.HasMember("models")) return false;
  auto geti = [&](const char* k) { return cfg.HasMember(k) && cfg[k].IsInt() ? cfg[k].GetInt() : 0; };
  out->intra = geti("intra_op");
  out->inter = geti("inter_op");
  out->cores = geti("cores");
  out->versions = initial_versions(models_from_json(cfg["models"]));
  return true;
}

// What a version directory holds, by name, size and modification time: a version rewritten
// in place between the preload and the start is loaded again.
std::string files_of(const std::string& dir) {
  std::string out;
  auto add = [&](const std::string& path) {
    struct stat sb;
    if (stat(path.c_str(), &sb) == 0)
      out += path + ":" + std::to_string(sb.st_size) + ":" + std::to_string(sb.st_mtim.tv_sec) + "." +
             std::to_string(sb.st_mtim.tv_nsec) + ";";
  };
  for (const char* f : {"saved_model.pb", "saved_model.pbtxt", "fingerprint.pb"}) add(dir + "/" + f);
  for (const char* sub : {"/variables", "/assets", "/assets.extra"}) {
    DIR* d = opendir((dir + sub).c_str());
    if (!d) continue;
    std::vector<std::string> names;
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') names.push_back(e->d_name);
    closedir(d);
    std::sort(names.begin(), names.end());
    for (auto& n : names) add(dir + sub + "/" + n);
  }
  return out;
}

cpu_set_t mask_of(const std::vector<int>& cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cpus) CPU_SET(c, &set);
  return set;
}
}  // namespace

namespace preload {

void start(const std::string& config, const std::vector<int>& cpus) {
  Plan plan;
  if (g.started || !plan_of(config, &plan) || plan.versions.empty()) return;
  g.started = true;
  g.plan = plan;
  // TensorFlow's thread pools are process-wide, sized by the first session from the CPUs its
  // thread may run on, and their threads take the creating thread's priority: created here, at
  // normal priority, seeing the CPUs the start will have (the start re-pins every thread).
  cpu_set_t all;
  sched_getaffinity(0, sizeof all, &all);
  if (!cpus.empty()) {
    cpu_set_t mask = mask_of(cpus);
    sched_setaffinity(0, sizeof mask, &mask);
  }
  LoadedModel::create_thread_pools(plan.intra, plan.inter);
  sched_setaffinity(0, sizeof all, &all);
  g.loader = std::thread([] {
    g.loader_tid = pid_t(syscall(SYS_gettid));
    setpriority(PRIO_PROCESS, id_t(g.loader_tid), 19);
    auto t0 = std::chrono::steady_clock::now();
    for (auto& pv : g.plan.versions) {
      std::string error;
      Loaded l{pv.first, files_of(pv.first), nullptr};
      // the loader's runs on this thread (inline): not on the pool threads, at normal priority
      l.model = LoadedModel::load(pv.first, pv.second, g.plan.intra, g.plan.inter, g.plan.cores, &error, true);
      if (!l.model) continue;  // the start loads it again, and reports the error
      std::lock_guard<std::mutex> lk(g.mu);
      g.loaded.push_back(std::move(l));
    }
    g.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  });
}

bool fits(const std::string& config) {
  if (!g.started) return true;
  Plan plan;
  return plan_of(config, &plan) && plan == g.plan;
}

std::shared_ptr<LoadedModel> take(const std::string& path) {
  if (!g.started) return nullptr;
  if (g.loader.joinable()) {
    // the start waits for it: at normal priority from now on where that is allowed
    setpriority(PRIO_PROCESS, id_t(g.loader_tid), 0);
    g.loader.join();
    logf("The standby prepared %zu of %zu model versions (%.2f s of loading)", g.loaded.size(),
         g.plan.versions.size(), g.seconds);
  }
  std::lock_guard<std::mutex> lk(g.mu);
  for (auto& l : g.loaded)
    if (l.path == path && l.model) {
      auto model = std::move(l.model);
      if (files_of(path) != l.files) return nullptr;  // changed since: load it again
      return model;
    }
  return nullptr;
}

void release() {
  if (g.loader.joinable()) g.loader.join();
  std::lock_guard<std::mutex> lk(g.mu);
  g.loaded.clear();
}

}  // namespace preload
