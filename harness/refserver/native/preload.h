// A standby's head start: the models the previous start served, loaded before the next start
// asks for them. Between the trials of a study the server restarts with new batching
// parameters and the same models; loading a SavedModel (TensorFlow's graph optimisation of its
// restore function above all) is most of a restart (docs/native.md, "Restart to ready").
//
// The fork server sends a new standby the command it has just handed to the previous one
// ("prepare"); the standby loads those model versions on a nice-19 thread, so that it takes
// only CPU a running trial leaves idle. A start whose session options, CPUs count and model
// versions are the prepared ones takes them (each version's files are checked unchanged);
// any other start is a cold one (the standby exec's it, standby.cc).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model.h"

namespace preload {
// Starts loading what ``config`` (a --config JSON) would load at start-up, for a server pinned
// to ``cpus`` (empty: not pinned). TensorFlow must be open.
void start(const std::string& config, const std::vector<int>& cpus);
// Whether a start with ``config`` can use what was prepared: the same session options, CPU
// count and model versions (true when nothing was prepared).
bool fits(const std::string& config);
// The version loaded for ``path``, when its files are as they were (waits for the loading to
// end); null otherwise. Each is handed out once.
std::shared_ptr<LoadedModel> take(const std::string& path);
// Frees what was prepared and not taken.
void release();
}  // namespace preload
