// A server started before it is needed (`harness-refserver-native --standby`): it opens
// TensorFlow's C API, then waits on its standard input for the start request the fork server
// sends once `harness serve`'s launcher has checked the flags. Opening TensorFlow is a third of
// a restart (docs/native.md, "Restart to ready"); a standby has it done between trials.
#pragma once
#include <string>
#include <vector>

struct StartRequest {
  std::vector<std::string> argv;                          // what the launcher would have exec'd
  std::vector<std::pair<std::string, std::string>> env;  // and its environment
  std::string log;                                        // appended to, as stdout and stderr
  std::vector<int> cpus;                                  // empty: not pinned
};

namespace standby {
// Opens TensorFlow on a low-priority thread while the main thread waits for the request. False:
// standard input closed (the fork server went away) or the request is unreadable.
bool wait(StartRequest* req, double* tf_open_ms);
// Becomes the requested server: log as stdout and stderr, every thread pinned, the request's
// environment. When that environment differs from ours in anything TensorFlow may have read
// while opening, or the binary on disk is not this one, exec's the request instead (a cold
// start in the same process). Returns the --config JSON to serve.
std::string become(const StartRequest& req);
}  // namespace standby
