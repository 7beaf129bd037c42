#include "predictor.h"

Status Predictor::resolve(const std::string& name, int version_case, int64_t version, const std::string& label,
                          const std::string& signature_name, std::shared_ptr<LoadedModel>* model,
                          const Signature** sig) {
  if (name.empty()) return Invalid("Missing ModelSpec");
  Status s = manager->resolve(name, version_case, version, label, model);
  if (!s.ok()) return s;
  return (*model)->signature(signature_name, sig);
}

void Predictor::run(const std::string& name, const std::shared_ptr<LoadedModel>& model, const Signature* sig,
                    std::vector<std::pair<std::string, Tensor>>& given, double deadline, Done done) {
  std::vector<Tensor> feeds;
  int64_t size = 0;
  // a version without queue options (no batching_params.pbtxt under per-model batching) runs
  // alone, as TF Serving runs a session it did not wrap for batching
  Batcher* batcher = model->batching ? this->batcher : nullptr;
  Status s = sig->check_inputs(given, batcher != nullptr, &feeds, &size);
  if (!s.ok()) return done(s, {});
  if (!batcher || size == 0) {
    double t0 = steady_now();
    std::vector<Tensor> outputs;
    s = model->run(*sig, feeds, &outputs);
    metrics->runtime_latency.observe((steady_now() - t0) * 1e6, {name, "Predict", "TF1"});
    return done(s, std::move(outputs));
  }
  auto job = std::make_shared<Job>();
  job->model = model;
  job->model_name = name;
  job->sig = sig;
  job->inputs = std::move(feeds);
  job->deadline = deadline;
  job->done = std::move(done);
  s = batcher->submit(name, model->version, sig->name, job, size);
  if (!s.ok()) job->done(s, {});
}

void Predictor::record(const std::string& name, int code, double started, const char* entrypoint) {
  metrics->request_count.inc({name, code_name(code)});
  metrics->request_latency.observe((steady_now() - started) * 1e6, {name, "predict", entrypoint});
}

Status Predictor::select_outputs(const Signature& sig, const std::vector<std::string>& filter, std::vector<bool>* keep) {
  keep->assign(sig.outputs.size(), filter.empty());
  if (filter.empty()) return Status::Ok();
  for (auto& alias : filter) {
    const TensorSpec* spec = sig.output(alias);
    if (!spec) {
      std::string set = "{";
      for (size_t i = 0; i < sig.outputs.size(); i++) set += (i ? "," : "") + sig.outputs[i].alias;
      return Invalid("output tensor alias not found in signature: " + alias + " Outputs expected to be in the set " +
                     set + "}.");
    }
    (*keep)[size_t(spec - sig.outputs.data())] = true;
  }
  return Status::Ok();
}
