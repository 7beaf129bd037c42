#include "grpc_front.h"

#include <cstdlib>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include <cstring>

#include "log.h"
#include "messages.h"
#include "wire.h"

namespace {
const char* const PREDICTION = "/tensorflow.serving.PredictionService/";
const char* const MODEL = "/tensorflow.serving.ModelService/";

struct Call {
  enum Phase { REQUESTED, RECEIVED, SENT } phase = REQUESTED;
  // A registered method's call (its request message arrives with it), or null: any other
  // method, whose message is read in a second step.
  const GrpcFront::Method* method = nullptr;
  gpr_timespec registered_deadline{};
  grpc_call* call = nullptr;
  grpc_call_details details;
  grpc_metadata_array md;
  grpc_byte_buffer* recv = nullptr;
  grpc_byte_buffer* send = nullptr;
  grpc_slice status_details;
  bool has_details = false;
  int cancelled = 0;
  double deadline = 0;
  Call() {
    grpc_call_details_init(&details);
    grpc_metadata_array_init(&md);
  }
  ~Call() {
    if (recv) grpc_byte_buffer_destroy(recv);
    if (send) grpc_byte_buffer_destroy(send);
    if (has_details) grpc_slice_unref(status_details);
    grpc_call_details_destroy(&details);
    grpc_metadata_array_destroy(&md);
    if (call) grpc_call_unref(call);
  }
};

// The request message in one piece: a view of the buffer's only slice when it has one, else of
// one slice it is copied into (held by *keep, unreferenced by the caller). The handlers parse
// and decode before they return, so no copy of the message outlives the call.
std::string_view read_all(grpc_byte_buffer* bb, grpc_slice* keep) {
  *keep = grpc_empty_slice();
  if (bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE &&
      bb->data.raw.slice_buffer.count == 1) {
    const grpc_slice& only = bb->data.raw.slice_buffer.slices[0];
    return std::string_view(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(only)), GRPC_SLICE_LENGTH(only));
  }
  grpc_byte_buffer_reader reader;
  if (!grpc_byte_buffer_reader_init(&reader, bb)) return std::string_view();
  *keep = grpc_byte_buffer_reader_readall(&reader);
  grpc_byte_buffer_reader_destroy(&reader);
  return std::string_view(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(*keep)), GRPC_SLICE_LENGTH(*keep));
}

// Answers a call: the message (when OK) and the status, then frees the call on completion.
void respond(Call* c, const Status& status, const std::string* body) {
  grpc_op ops[4];
  std::memset(ops, 0, sizeof ops);
  int n = 0;
  ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
  n++;
  if (status.ok() && body) {
    grpc_slice s = grpc_slice_from_copied_buffer(body->data(), body->size());
    c->send = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = c->send;
    n++;
  }
  c->status_details = grpc_slice_from_copied_buffer(status.message.data(), status.message.size());
  c->has_details = true;
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.status = grpc_status_code(status.code);
  ops[n].data.send_status_from_server.status_details = &c->status_details;
  n++;
  ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[n].data.recv_close_on_server.cancelled = &c->cancelled;
  n++;
  c->phase = Call::SENT;
  if (grpc_call_start_batch(c->call, ops, size_t(n), c, nullptr) != GRPC_CALL_OK) delete c;
}

void model_spec(wire::Writer* w, uint32_t field, const std::string& name, int64_t version, const std::string* sig) {
  wire::Writer spec, ver;
  if (!name.empty()) spec.bytes(1, name);
  if (version) ver.i64(1, version);
  spec.message(2, ver);
  if (sig && !sig->empty()) spec.bytes(3, *sig);
  w->message(field, spec);
}

void predict(Predictor* p, Call* c, std::string_view body) {
  double started = steady_now();
  PredictRequestMsg req;
  if (!parse_predict_request(body, &req)) return respond(c, Error(INTERNAL, "Exception deserializing request!"), nullptr);
  const std::string name = req.spec.name;
  auto fail = [p, c, name, started](const Status& s) {
    p->record(name, s.code, started, "GRPC");
    respond(c, s, nullptr);
  };
  std::shared_ptr<LoadedModel> model;
  const Signature* sig;
  Status s = p->resolve(name, req.spec.version_case, req.spec.version, req.spec.label, req.spec.signature_name, &model, &sig);
  if (!s.ok()) return fail(s);
  std::vector<std::pair<std::string, Tensor>> given;
  given.reserve(req.inputs.size());
  for (auto& kv : req.inputs) {
    Tensor t;
    bool wire_ok;
    s = decode_tensor_proto(kv.second, kv.first, &t, &wire_ok);
    if (!s.ok()) return fail(s);
    given.emplace_back(kv.first, std::move(t));
  }
  std::vector<bool> keep;
  s = Predictor::select_outputs(*sig, req.output_filter, &keep);
  if (!s.ok()) return fail(s);
  p->run(name, model, sig, given, c->deadline,
         [p, c, name, started, model, sig, keep](const Status& st, std::vector<Tensor>&& outputs) {
           if (!st.ok()) {
             p->record(name, st.code, started, "GRPC");
             return respond(c, st, nullptr);
           }
           wire::Writer w;
           for (size_t i = 0; i < outputs.size(); i++) {
             if (!keep[i]) continue;
             std::string tp;
             Status es = encode_tensor_proto(outputs[i], &tp);
             if (!es.ok()) {
               p->record(name, es.code, started, "GRPC");
               return respond(c, es, nullptr);
             }
             wire::Writer entry;
             entry.bytes(1, sig->outputs[i].alias);
             entry.bytes(2, tp);
             w.message(1, entry);
           }
           model_spec(&w, 2, name, model->version, &sig->name);
           p->record(name, OK, started, "GRPC");
           respond(c, Status::Ok(), &w.out);
         });
}

std::string py_list(const std::vector<std::string>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); i++) s += (i ? ", " : "") + py_repr(v[i]);
  return s + "]";
}

void metadata(Predictor* p, Call* c, std::string_view body) {
  MetadataRequestMsg req;
  if (!parse_metadata_request(body, &req)) return respond(c, Error(INTERNAL, "Exception deserializing request!"), nullptr);
  if (req.metadata_field.size() != 1 || req.metadata_field[0] != "signature_def")
    return respond(c, Invalid("Metadata field(s) not supported: only signature_def may be requested (got " +
                              py_list(req.metadata_field) + ")"),
                   nullptr);
  std::shared_ptr<LoadedModel> model;
  Status s = p->manager->resolve(req.spec.name, req.spec.version_case, req.spec.version, req.spec.label, &model);
  if (!s.ok()) return respond(c, s, nullptr);
  wire::Writer map;
  for (auto& kv : model->signatures) {
    wire::Writer entry;
    entry.bytes(1, kv.first);
    entry.bytes(2, kv.second.raw);
    map.message(1, entry);
  }
  wire::Writer any, entry, w;
  any.bytes(1, "type.googleapis.com/tensorflow.serving.SignatureDefMap");
  any.bytes(2, map.out);
  entry.bytes(1, "signature_def");
  entry.message(2, any);
  model_spec(&w, 1, req.spec.name, model->version, nullptr);
  w.message(2, entry);
  respond(c, Status::Ok(), &w.out);
}

void model_status(Predictor* p, Call* c, std::string_view body) {
  ModelSpecMsg spec;
  if (!parse_status_request(body, &spec)) return respond(c, Error(INTERNAL, "Exception deserializing request!"), nullptr);
  std::vector<VersionStatus> list;
  Status s = p->manager->statuses(spec.name, spec.version_case, spec.version, spec.label, &list);
  if (!s.ok()) return respond(c, s, nullptr);
  wire::Writer w;
  for (auto& st : list) {
    wire::Writer mv, status;
    int code = UNKNOWN;
    for (int k = 0; k <= 16; k++)
      if (st.error_code == code_name(k)) code = k;
    if (code) status.u64(1, uint64_t(code));
    if (!st.error_message.empty()) status.bytes(2, st.error_message);
    if (st.version) mv.i64(1, st.version);
    mv.u64(2, uint64_t(st.state));
    mv.message(3, status);
    w.message(1, mv);
  }
  respond(c, Status::Ok(), &w.out);
}

void dispatch(Predictor* p, Call* c) {
  std::string method = c->method ? c->method->path
                                 : std::string(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(c->details.method)),
                                               GRPC_SLICE_LENGTH(c->details.method));
  if (!c->recv) return respond(c, Error(INTERNAL, "no request message"), nullptr);
  grpc_slice keep;
  std::string_view body = read_all(c->recv, &keep);
  struct Unref {
    grpc_slice* s;
    ~Unref() { grpc_slice_unref(*s); }
  } unref{&keep};
  size_t lp = strlen(PREDICTION), lm = strlen(MODEL);
  if (method.compare(0, lp, PREDICTION) == 0) {
    std::string m = method.substr(lp);
    if (m == "Predict") return predict(p, c, body);
    if (m == "GetModelMetadata") return metadata(p, c, body);
    if (m == "Classify" || m == "Regress" || m == "MultiInference")
      return respond(c, Error(UNIMPLEMENTED, m + " is not implemented by the reference server; use Predict"), nullptr);
  } else if (method.compare(0, lm, MODEL) == 0) {
    std::string m = method.substr(lm);
    if (m == "GetModelStatus") return model_status(p, c, body);
    if (m == "HandleReloadConfigRequest")
      return respond(c, Error(UNIMPLEMENTED, "HandleReloadConfigRequest is not implemented by the reference server; "
                                             "restart it with a new --model_config_file"),
                     nullptr);
  }
  respond(c, Error(UNIMPLEMENTED, ""), nullptr);
}
}  // namespace

bool GrpcFront::start(const std::string& address, std::string* error) {
  grpc_init();
  grpc_arg args[5];
  args[0].type = GRPC_ARG_INTEGER;
  args[0].key = const_cast<char*>(GRPC_ARG_ALLOW_REUSEPORT);
  args[0].value.integer = 0;  // a second server on the same port must fail, not share it
  args[1].type = GRPC_ARG_INTEGER;
  args[1].key = const_cast<char*>(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH);
  args[1].value.integer = -1;
  args[2].type = GRPC_ARG_INTEGER;
  args[2].key = const_cast<char*>(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH);
  args[2].value.integer = -1;
  size_t nargs = 3;
  // Under measurement: gRPC's optional filters (deadline checks, per-message compression) and
  // its bandwidth probes off ($HARNESS_REFSERVER_GRPC_LEAN=1).
  const char* lean = std::getenv("HARNESS_REFSERVER_GRPC_LEAN");
  if (lean && std::string(lean) == "1") {
    for (const char* key : {GRPC_ARG_MINIMAL_STACK, GRPC_ARG_HTTP2_BDP_PROBE}) {
      args[nargs].type = GRPC_ARG_INTEGER;
      args[nargs].key = const_cast<char*>(key);
      args[nargs].value.integer = key == std::string(GRPC_ARG_MINIMAL_STACK) ? 1 : 0;
      nargs++;
    }
  }
  grpc_channel_args channel_args{nargs, args};
  server_ = grpc_server_create(&channel_args, nullptr);
  cq_ = grpc_completion_queue_create_for_next(nullptr);
  grpc_server_register_completion_queue(server_, cq_, nullptr);
  // Registered methods come with their request message: one completion-queue event per call
  // fewer than a generic call (request, then read the message). Predict gets most of the
  // calls waiting for a request.
  for (const char* m : {"Predict", "GetModelMetadata", "Classify", "Regress", "MultiInference"})
    methods_.push_back(Method{std::string(PREDICTION) + m, nullptr, std::string(m) == "Predict" ? pending_ : 4});
  for (const char* m : {"GetModelStatus", "HandleReloadConfigRequest"})
    methods_.push_back(Method{std::string(MODEL) + m, nullptr, 4});
  for (auto& m : methods_)
    m.tag = grpc_server_register_method(server_, m.path.c_str(), nullptr, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
  grpc_server_credentials* creds = grpc_insecure_server_credentials_create();
  int port = grpc_server_add_http2_port(server_, address.c_str(), creds);
  grpc_server_credentials_release(creds);
  if (!port) {
    *error = "cannot listen for gRPC on " + address + ": the port is in use or the address is not local";
    return false;
  }
  grpc_server_start(server_);
  for (int i = 0; i < 8; i++) request_one(nullptr);  // other methods: UNIMPLEMENTED
  for (auto& m : methods_)
    for (int i = 0; i < m.pending; i++) request_one(&m);
  for (int i = 0; i < threads_n_; i++) threads_.emplace_back([this] { loop(); });
  return true;
}

void GrpcFront::request_one(const Method* m) {
  Call* c = new Call();
  c->method = m;
  grpc_call_error e =
      m && m->tag ? grpc_server_request_registered_call(server_, m->tag, &c->call, &c->registered_deadline, &c->md,
                                                        &c->recv, cq_, cq_, c)
                  : grpc_server_request_call(server_, &c->call, &c->details, &c->md, cq_, cq_, c);
  if (e != GRPC_CALL_OK) delete c;
}

void GrpcFront::loop() {
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(cq_, gpr_inf_future(GPR_CLOCK_REALTIME), nullptr);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) return;
    if (ev.type != GRPC_OP_COMPLETE || !ev.tag) continue;
    Call* c = static_cast<Call*>(ev.tag);
    if (c->phase == Call::REQUESTED) {
      if (!ev.success) {
        delete c;
        continue;
      }
      request_one(c->method);
      gpr_timespec dl = gpr_convert_clock_type(c->method ? c->registered_deadline : c->details.deadline,
                                               GPR_CLOCK_MONOTONIC);
      if (gpr_time_cmp(dl, gpr_inf_future(GPR_CLOCK_MONOTONIC)) != 0) {
        gpr_timespec left = gpr_time_sub(dl, gpr_now(GPR_CLOCK_MONOTONIC));
        double remaining = double(left.tv_sec) + left.tv_nsec / 1e9;
        if (remaining <= 1e8) c->deadline = steady_now() + remaining;
      }
      if (c->method && c->method->tag) {  // the message came with the call
        c->phase = Call::RECEIVED;
        dispatch(p_, c);
        continue;
      }
      grpc_op op;
      std::memset(&op, 0, sizeof op);
      op.op = GRPC_OP_RECV_MESSAGE;
      op.data.recv_message.recv_message = &c->recv;
      c->phase = Call::RECEIVED;
      if (grpc_call_start_batch(c->call, &op, 1, c, nullptr) != GRPC_CALL_OK) delete c;
    } else if (c->phase == Call::RECEIVED) {
      dispatch(p_, c);
    } else {
      delete c;
    }
  }
}

void GrpcFront::stop() {
  if (!server_) return;
  grpc_server_shutdown_and_notify(server_, cq_, nullptr);
  grpc_server_cancel_all_calls(server_);
  // the shutdown tag (null) arrives on the queue; the loops skip it
  gpr_sleep_until(gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(200, GPR_TIMESPAN)));
  grpc_completion_queue_shutdown(cq_);
  for (auto& t : threads_) t.join();
  grpc_server_destroy(server_);
  grpc_completion_queue_destroy(cq_);
  server_ = nullptr;
}
