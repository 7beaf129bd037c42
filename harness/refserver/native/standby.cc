#include "standby.h"

#include <dirent.h>
#include <fcntl.h>
#include <rapidjson/document.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <thread>

#include "preload.h"
#include "tfapi.h"

extern char** environ;

namespace {
// Variables read only after the start request (by the launcher, or by the server as it starts
// serving): a request may differ from the standby in these and still be served by it.
const char* const LATE_VARIABLES[] = {"HARNESS_REFSERVER_BIND_ADDRESS", "HARNESS_REFSERVER_IMPL",
                                      "HARNESS_REFSERVER_BATCH_TRACE", "HARNESS_REFSERVER_HANDOFF_FD"};

bool late(const std::string& key) {
  for (const char* k : LATE_VARIABLES)
    if (key == k) return true;
  return false;
}

// The next line of ``fd`` into *line; ``pending`` keeps what was read past it.
bool read_line(int fd, std::string* pending, std::string* line) {
  char buf[65536];
  for (;;) {
    size_t nl = pending->find('\n');
    if (nl != std::string::npos) {
      line->assign(*pending, 0, nl);
      pending->erase(0, nl + 1);
      return true;
    }
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    pending->append(buf, size_t(n));
  }
}

std::string config_of(const std::vector<std::string>& argv) {
  for (auto& a : argv)
    if (a.compare(0, 9, "--config=") == 0) return a.substr(9);
  return "";
}

std::vector<std::string> strings_of(const rapidjson::Value& v) {
  std::vector<std::string> out;
  if (v.IsArray())
    for (auto& a : v.GetArray())
      if (a.IsString()) out.emplace_back(a.GetString(), a.GetStringLength());
  return out;
}

std::vector<int> ints_of(const rapidjson::Value& v) {
  std::vector<int> out;
  if (v.IsArray())
    for (auto& c : v.GetArray())
      if (c.IsInt()) out.push_back(c.GetInt());
  return out;
}

std::map<std::string, std::string> our_environment() {
  std::map<std::string, std::string> out;
  for (char** e = environ; *e; e++) {
    const char* eq = strchr(*e, '=');
    if (eq) out[std::string(*e, size_t(eq - *e))] = eq + 1;
  }
  return out;
}

// Whether TensorFlow, opened under our environment, is what the request would have opened.
bool same_start(const StartRequest& req) {
  auto ours = our_environment();
  std::map<std::string, std::string> theirs(req.env.begin(), req.env.end());
  for (auto* side : {&ours, &theirs})
    for (auto& kv : *side) {
      if (late(kv.first)) continue;
      auto a = ours.find(kv.first), b = theirs.find(kv.first);
      if (a == ours.end() || b == theirs.end() || a->second != b->second) return false;
    }
  struct stat given, self;
  return !req.argv.empty() && stat(req.argv[0].c_str(), &given) == 0 && stat("/proc/self/exe", &self) == 0 &&
         given.st_dev == self.st_dev && given.st_ino == self.st_ino;
}

void pin_all(const std::vector<int>& cpus) {
  if (cpus.empty()) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cpus) CPU_SET(c, &set);
  DIR* d = opendir("/proc/self/task");
  if (!d) return;
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') sched_setaffinity(pid_t(atoi(e->d_name)), sizeof set, &set);
  closedir(d);
}

void redirect(const std::string& log) {
  int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd >= 0) {
    dup2(fd, 1);
    dup2(fd, 2);
    close(fd);
  }
  int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null >= 0) {
    dup2(null, 0);
    close(null);
  }
}
}  // namespace

namespace standby {

bool wait(StartRequest* req, double* tf_open_ms) {
  // Opening TensorFlow takes ~0.35 s of CPU; at nice 19 it takes only what nothing else wants
  // (a running trial's server and load generator come first). The thread ends once it is open,
  // so the server's own threads, started later by the main thread, run at its priority.
  std::thread opener([tf_open_ms] {
    setpriority(PRIO_PROCESS, id_t(syscall(SYS_gettid)), 19);
    auto t0 = std::chrono::steady_clock::now();
    std::string ignored;  // a failure is reported again, to the log, when the server starts
    tfapi::load(&ignored);
    *tf_open_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  });
  std::string pending, line;
  rapidjson::Document doc;
  for (;;) {
    if (!read_line(0, &pending, &line)) {
      if (opener.joinable()) opener.join();
      return false;
    }
    doc.Parse(line.c_str(), line.size());
    if (doc.HasParseError() || !doc.IsObject()) continue;
    if (!doc.HasMember("prepare")) break;
    // {"prepare": argv, "cpus": [...]}: the previous start, to load its models ahead of the next
    if (opener.joinable()) opener.join();
    if (tfapi::load(nullptr))
      preload::start(config_of(strings_of(doc["prepare"])), doc.HasMember("cpus") ? ints_of(doc["cpus"]) : std::vector<int>());
  }
  if (opener.joinable()) opener.join();
  if (doc.HasMember("argv")) req->argv = strings_of(doc["argv"]);
  if (doc.HasMember("env") && doc["env"].IsObject())
    for (auto& kv : doc["env"].GetObject())
      if (kv.value.IsString()) req->env.emplace_back(kv.name.GetString(), kv.value.GetString());
  if (doc.HasMember("log") && doc["log"].IsString()) req->log = doc["log"].GetString();
  if (doc.HasMember("cpus")) req->cpus = ints_of(doc["cpus"]);
  return !req->argv.empty();
}

std::string become(const StartRequest& req) {
  if (!req.log.empty()) redirect(req.log);
  pin_all(req.cpus);
  std::string config = config_of(req.argv);
  if (!same_start(req) || !preload::fits(config)) {
    std::vector<std::string> env;
    for (auto& kv : req.env) env.push_back(kv.first + "=" + kv.second);
    std::vector<char*> argv, envp;
    for (auto& a : req.argv) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    execve(argv[0], argv.data(), envp.data());
    fprintf(stderr, "error: cannot start %s: %s\n", argv[0], strerror(errno));
    fflush(stderr);
    _exit(1);
  }
  clearenv();
  for (auto& kv : req.env) setenv(kv.first.c_str(), kv.second.c_str(), 1);
  return config;
}

}  // namespace standby
