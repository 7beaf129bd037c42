#include "rest_front.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>

#include <rapidjson/error/en.h>

#include "json_tensor.h"
#include "log.h"

namespace {
constexpr size_t MAX_HEADER_BYTES = 64 * 1024;

const char* reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
  }
  return "Unknown";
}

using Writer = rapidjson::Writer<rapidjson::StringBuffer, rapidjson::UTF8<>, rapidjson::ASCII<>, rapidjson::CrtAllocator,
                                 rapidjson::kWriteNanAndInfFlag>;

std::string json_str(const std::string& s) {
  rapidjson::StringBuffer sb;
  Writer w(sb);
  w.String(s.data(), rapidjson::SizeType(s.size()));
  return sb.GetString();
}

// json.dumps({"error": message}): Python's default separators.
std::string error_body(const std::string& message) { return "{\"error\": " + json_str(message) + "}"; }

struct Response {
  int status = 200;
  std::string body;
  const char* ctype = "application/json";
};

Response error_response(const Status& s) { return Response{http_status(s.code), error_body(s.message)}; }

// -- tensors to JSON -----------------------------------------------------------------------------

float half_to_float(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0) {
    if (!mant) bits = sign;
    else {
      int e = -1;
      do {
        e++;
        mant <<= 1;
      } while (!(mant & 0x400));
      bits = sign | uint32_t(127 - 15 - e) << 23 | (mant & 0x3ff) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000 | mant << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

void b64_encode(const std::string& in, std::string* out) {
  const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (size_t i = 0; i < in.size(); i += 3) {
    uint32_t n = uint32_t(uint8_t(in[i])) << 16;
    if (i + 1 < in.size()) n |= uint32_t(uint8_t(in[i + 1])) << 8;
    if (i + 2 < in.size()) n |= uint8_t(in[i + 2]);
    out->push_back(a[n >> 18 & 63]);
    out->push_back(a[n >> 12 & 63]);
    out->push_back(i + 1 < in.size() ? a[n >> 6 & 63] : '=');
    out->push_back(i + 2 < in.size() ? a[n & 63] : '=');
  }
}

// ``binary``: the output's name ends in _bytes, so its strings are {"b64": ...} objects (TF
// Serving's REST rule); other strings are JSON strings unless they are not UTF-8.
bool binary_output(const std::string& alias) {
  return alias.size() >= 6 && alias.compare(alias.size() - 6, 6, "_bytes") == 0;
}

void write_element(Writer& w, const Tensor& t, int64_t i, bool binary) {
  const char* p = t.data.data();
  switch (t.dtype) {
    case DT_FLOAT: { float f; std::memcpy(&f, p + 4 * i, 4); w.Double(double(f)); break; }
    case DT_DOUBLE: { double d; std::memcpy(&d, p + 8 * i, 8); w.Double(d); break; }
    case DT_HALF: { uint16_t h; std::memcpy(&h, p + 2 * i, 2); w.Double(double(half_to_float(h))); break; }
    case DT_INT32: { int32_t v; std::memcpy(&v, p + 4 * i, 4); w.Int(v); break; }
    case DT_UINT32: { uint32_t v; std::memcpy(&v, p + 4 * i, 4); w.Uint(v); break; }
    case DT_INT64: { int64_t v; std::memcpy(&v, p + 8 * i, 8); w.Int64(v); break; }
    case DT_UINT64: { uint64_t v; std::memcpy(&v, p + 8 * i, 8); w.Uint64(v); break; }
    case DT_INT16: { int16_t v; std::memcpy(&v, p + 2 * i, 2); w.Int(v); break; }
    case DT_UINT16: { uint16_t v; std::memcpy(&v, p + 2 * i, 2); w.Uint(v); break; }
    case DT_INT8: w.Int(int8_t(p[i])); break;
    case DT_UINT8: w.Uint(uint8_t(p[i])); break;
    case DT_BOOL: w.Bool(p[i] != 0); break;
    case DT_STRING: {
      const std::string& s = t.strings[size_t(i)];
      if (!binary && valid_utf8(s)) {
        w.String(s.data(), rapidjson::SizeType(s.size()));
      } else {
        std::string enc;
        b64_encode(s, &enc);
        w.StartObject();
        w.Key("b64");
        w.String(enc.data(), rapidjson::SizeType(enc.size()));
        w.EndObject();
      }
      break;
    }
    default: w.Null();
  }
}

// Elements [offset, offset + prod(shape[dim:])) as nested lists.
void write_nested(Writer& w, const Tensor& t, size_t dim, int64_t* index, bool binary) {
  if (dim == t.shape.size()) {
    write_element(w, t, (*index)++, binary);
    return;
  }
  w.StartArray();
  for (int64_t k = 0; k < t.shape[dim]; k++) write_nested(w, t, dim + 1, index, binary);
  w.EndArray();
}

void write_tensor(Writer& w, const Tensor& t, bool binary) {
  int64_t index = 0;
  write_nested(w, t, 0, &index, binary);
}

void write_row(Writer& w, const Tensor& t, int64_t row, bool binary) {
  Tensor r;
  r.dtype = t.dtype;
  r.shape.assign(t.shape.begin() + 1, t.shape.end());
  int64_t per = r.count();
  int64_t index = row * per;
  if (r.shape.empty()) {
    write_element(w, t, index, binary);
    return;
  }
  // write the row's elements using the parent tensor's storage
  struct View {
    static void go(Writer& w, const Tensor& t, const std::vector<int64_t>& shape, size_t dim, int64_t* index,
                   bool binary) {
      if (dim == shape.size()) {
        write_element(w, t, (*index)++, binary);
        return;
      }
      w.StartArray();
      for (int64_t k = 0; k < shape[dim]; k++) go(w, t, shape, dim + 1, index, binary);
      w.EndArray();
    }
  };
  View::go(w, t, r.shape, 0, &index, binary);
}

// -- routes --------------------------------------------------------------------------------------

// ^/v1/models/(name)(?:/versions/(v)|/labels/(l))?(/metadata|:predict|:classify|:regress)?$ with
// [^/:]+ for name, v and l: rest.py's pattern, matched by hand: std::regex is the slowest step of routing.
struct ModelPath {
  std::string name, version, label, rest;
  bool has_version = false, has_label = false, has_rest = false;
};

bool match_model_path(const std::string& path, ModelPath* m) {
  const std::string prefix = "/v1/models/";
  if (path.compare(0, prefix.size(), prefix) != 0) return false;
  size_t at = prefix.size();
  auto segment = [&](size_t from) {
    size_t end = path.find_first_of("/:", from);
    return end == std::string::npos ? path.size() : end;
  };
  size_t end = segment(at);
  if (end == at) return false;
  m->name = path.substr(at, end - at);
  at = end;
  for (const char* kind : {"/versions/", "/labels/"}) {
    size_t n = strlen(kind);
    if (path.compare(at, n, kind) == 0) {
      size_t e = segment(at + n);
      if (e > at + n) {
        (kind[1] == 'v' ? m->version : m->label) = path.substr(at + n, e - at - n);
        (kind[1] == 'v' ? m->has_version : m->has_label) = true;
        at = e;
      }
      break;
    }
  }
  if (at == path.size()) return true;
  std::string rest = path.substr(at);
  if (rest == "/metadata" || rest == ":predict" || rest == ":classify" || rest == ":regress") {
    m->rest = rest;
    m->has_rest = true;
    return true;
  }
  return false;
}

bool all_digits(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}
}  // namespace

// -- connections and event loops -----------------------------------------------------------------

struct Conn {
  int fd = -1;
  uint64_t id = 0;
  std::string in;
  std::string out;
  size_t out_off = 0;
  bool busy = false;       // a request is being answered
  bool close_after = false;
  uint64_t request_seq = 0;
  double deadline = 0;     // of the request being answered (REST timeout + 1 s), 0: none
  bool want_write = false;
  // After the last answer: our side is shut, the client's bytes are read and dropped until it
  // closes (or 2 s pass), so that closing with unread input does not reset the connection
  // before the client has read the answer (a 413 before a large body, for one).
  bool draining = false;
  double drain_until = 0;
};

class RestLoop {
 public:
  RestLoop(RestFront* f) : f_(f), p_(f->p_), opts_(f->opts_) {}
  void run();

 private:
  struct Mail {
    uint64_t conn, seq;
    Response r;
    bool keep_alive;
  };
  void accept_all();
  void on_readable(Conn* c);
  void try_parse(Conn* c);
  void send(Conn* c, const Response& r, bool keep_alive);
  void flush(Conn* c);
  void close_conn(Conn* c);
  void post(uint64_t conn, uint64_t seq, Response r, bool keep_alive);
  void drain_mail();
  void check_timeouts();
  // Handles one request; returns true when it was answered at once (into *r).
  bool handle(Conn* c, const std::string& method, const std::string& target, std::string& body, bool keep_alive,
              Response* r);
  bool predict(Conn* c, const std::string& name, int vcase, int64_t version, const std::string& label,
               std::string& body, bool keep_alive, Response* r);
  Response model_status(const std::string& name, int vcase, int64_t version, const std::string& label);
  Response metadata(const std::string& name, int vcase, int64_t version, const std::string& label);

  RestFront* f_;
  Predictor* p_;
  const RestOptions& opts_;
  int ep_ = -1, efd_ = -1;
  uint64_t next_id_ = 1;
  double next_drain_check_ = 0;
  std::map<uint64_t, Conn*> conns_;
  std::mutex mail_mu_;
  std::vector<Mail> mail_;
  struct Pending {
    uint64_t seq;
    double started;
    std::string name;
  };
  std::map<uint64_t, Pending> pending_;  // by connection: requests waiting for a batch
};

void RestLoop::run() {
  ep_ = epoll_create1(EPOLL_CLOEXEC);
  efd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLEXCLUSIVE;
  ev.data.u64 = 0;
  epoll_ctl(ep_, EPOLL_CTL_ADD, f_->listen_fd_, &ev);
  ev.events = EPOLLIN;
  ev.data.u64 = 1;
  epoll_ctl(ep_, EPOLL_CTL_ADD, efd_, &ev);
  epoll_event events[64];
  while (!f_->stopping_.load()) {
    int timeout = pending_.empty() ? 250 : 50;
    int n = epoll_wait(ep_, events, 64, timeout);
    for (int i = 0; i < n; i++) {
      uint64_t tag = events[i].data.u64;
      if (tag == 0) {
        accept_all();
      } else if (tag == 1) {
        uint64_t v;
        while (read(efd_, &v, sizeof v) > 0) {
        }
        drain_mail();
      } else {
        auto it = conns_.find(tag);
        if (it == conns_.end()) continue;
        Conn* c = it->second;
        if (events[i].events & (EPOLLERR | EPOLLHUP)) {
          close_conn(c);
          continue;
        }
        if (events[i].events & EPOLLOUT) {
          flush(c);
          if (conns_.find(tag) == conns_.end()) continue;
        }
        if (events[i].events & EPOLLIN) on_readable(c);
      }
    }
    if (!pending_.empty()) check_timeouts();
    double now = steady_now();
    if (now > next_drain_check_) {
      next_drain_check_ = now + 0.5;
      std::vector<Conn*> done;
      for (auto& kv : conns_)
        if (kv.second->draining && now > kv.second->drain_until) done.push_back(kv.second);
      for (Conn* c : done) close_conn(c);
    }
  }
  for (auto& kv : conns_) {
    ::close(kv.second->fd);
    delete kv.second;
  }
  conns_.clear();
  ::close(efd_);
  ::close(ep_);
}

void RestLoop::accept_all() {
  for (;;) {
    int fd = accept4(f_->listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    Conn* c = new Conn();
    c->fd = fd;
    c->id = (next_id_++ << 1) | (uint64_t(1) << 62);  // never 0 or 1 (the listener and the mailbox)
    conns_[c->id] = c;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = c->id;
    epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
  }
}

void RestLoop::close_conn(Conn* c) {
  epoll_ctl(ep_, EPOLL_CTL_DEL, c->fd, nullptr);
  ::close(c->fd);
  pending_.erase(c->id);
  conns_.erase(c->id);
  delete c;
}

void RestLoop::on_readable(Conn* c) {
  char buf[65536];
  if (c->draining) {
    for (;;) {
      ssize_t n = ::recv(c->fd, buf, sizeof buf, 0);
      if (n > 0) continue;
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      close_conn(c);
      return;
    }
  }
  for (;;) {
    ssize_t n = ::recv(c->fd, buf, sizeof buf, 0);
    if (n > 0) {
      c->in.append(buf, size_t(n));
      if (size_t(n) < sizeof buf) break;
      continue;
    }
    if (n == 0) {
      // the client is done sending: answer what is complete, then close
      c->close_after = true;
      if (!c->busy) {
        uint64_t id = c->id;
        try_parse(c);
        if (conns_.count(id) && !c->busy && c->out_off >= c->out.size()) close_conn(c);
      }
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    close_conn(c);
    return;
  }
  if (!c->busy) try_parse(c);
}

namespace {
// -1: incomplete, -2: malformed, else the number of bytes consumed; *body gets the payload.
long parse_chunked(const std::string& in, size_t from, int64_t max_body, std::string* body, bool* too_large) {
  size_t at = from;
  int64_t total = 0;
  body->clear();
  for (;;) {
    size_t eol = in.find("\r\n", at);
    if (eol == std::string::npos) return -1;
    std::string line = in.substr(at, eol - at);
    size_t semi = line.find(';');
    if (semi != std::string::npos) line.resize(semi);
    // Python's int(x, 16) after strip(): optional sign, optional 0x, hex digits, underscores
    size_t b = line.find_first_not_of(" \t"), e = line.find_last_not_of(" \t");
    if (b == std::string::npos) return -2;
    line = line.substr(b, e - b + 1);
    bool neg = false;
    size_t k = 0;
    if (line[k] == '+' || line[k] == '-') neg = line[k++] == '-';
    if (line.size() - k > 2 && line[k] == '0' && (line[k + 1] == 'x' || line[k + 1] == 'X')) k += 2;
    if (k >= line.size()) return -2;
    int64_t n = 0;
    bool prev_us = true;
    for (; k < line.size(); k++) {
      char ch = line[k];
      int d = (ch >= '0' && ch <= '9') ? ch - '0' : (ch >= 'a' && ch <= 'f') ? ch - 'a' + 10 : (ch >= 'A' && ch <= 'F') ? ch - 'A' + 10 : -1;
      if (ch == '_' && !prev_us) {
        prev_us = true;
        continue;
      }
      if (d < 0) return -2;
      prev_us = false;
      if (n > (int64_t(1) << 56)) {
        *too_large = true;
        return 0;
      }
      n = n * 16 + d;
    }
    if (prev_us) return -2;
    if (neg && n) return -2;
    at = eol + 2;
    if (n == 0) {
      size_t end = in.find("\r\n", at);
      if (end == std::string::npos) return -1;
      return long(end + 2);
    }
    total += n;
    if (total > max_body) {
      *too_large = true;
      return 0;
    }
    if (in.size() < at + size_t(n) + 2) return -1;
    body->append(in, at, size_t(n));
    at += size_t(n) + 2;
  }
}
}  // namespace

void RestLoop::try_parse(Conn* c) {
  while (!c->busy && conns_.count(c->id)) {
    size_t end = c->in.find("\r\n\r\n");
    if (end == std::string::npos) {
      if (c->in.size() > MAX_HEADER_BYTES) {
        c->close_after = true;
        return send(c, Response{431, error_body("Request headers are too large")}, false);
      }
      if (c->close_after) close_conn(c);
      return;
    }
    if (end + 4 > MAX_HEADER_BYTES + 4) {
      c->close_after = true;
      return send(c, Response{431, error_body("Request headers are too large")}, false);
    }
    // The request line and the three headers that matter, read in place (string_views into
    // c->in): a map of every header and a copy of each line cost more than the rest of routing.
    std::string_view head(c->in.data(), end);
    auto bad = [&](const std::string& msg) {
      c->close_after = true;
      send(c, Response{400, error_body(msg)}, false);
    };
    size_t eol = head.find("\r\n");
    std::string_view request_line = head.substr(0, eol);
    std::string_view parts[3];
    size_t nparts = 0;
    for (size_t s = 0;;) {
      size_t sp = request_line.find(' ', s);
      if (nparts < 3) parts[nparts] = request_line.substr(s, sp == std::string_view::npos ? std::string_view::npos : sp - s);
      nparts++;
      if (sp == std::string_view::npos) break;
      s = sp + 1;
    }
    if (nparts != 3 || parts[2].compare(0, 5, "HTTP/") != 0)
      return bad("Malformed request line: " + py_repr(std::string(request_line.substr(0, 100))));
    std::string conn_h, te_h, cl_h;
    bool has_te = false, has_cl = false;
    auto strip = [](std::string_view v) {
      size_t b = v.find_first_not_of(" \t\r\n\v\f"), e = v.find_last_not_of(" \t\r\n\v\f");
      return b == std::string_view::npos ? std::string_view() : v.substr(b, e - b + 1);
    };
    auto lower = [](std::string_view v) {
      std::string s(v);
      for (auto& ch : s) ch = char(tolower(ch));
      return s;
    };
    auto is = [](std::string_view key, const char* name) {  // case-insensitive equality
      size_t n = strlen(name);
      if (key.size() != n) return false;
      for (size_t i = 0; i < n; i++)
        if (tolower(key[i]) != name[i]) return false;
      return true;
    };
    for (size_t at = eol == std::string_view::npos ? head.size() : eol + 2; at < head.size();) {
      size_t nl = head.find("\r\n", at);
      std::string_view l = head.substr(at, nl == std::string_view::npos ? std::string_view::npos : nl - at);
      at = nl == std::string_view::npos ? head.size() : nl + 2;
      if (l.empty()) continue;
      size_t colon = l.find(':');
      if (colon == std::string_view::npos) return bad("Malformed header line: " + py_repr(std::string(l.substr(0, 100))));
      std::string_view k = strip(l.substr(0, colon)), v = strip(l.substr(colon + 1));
      if (is(k, "connection")) conn_h = lower(v);  // the last of each wins, as in a dict
      else if (is(k, "transfer-encoding")) te_h = lower(v), has_te = true;
      else if (is(k, "content-length")) cl_h = std::string(v), has_cl = true;
    }
    bool keep_alive = parts[2] == "HTTP/1.0" ? conn_h == "keep-alive" : conn_h != "close";
    std::string method(parts[0]), target(parts[1]);
    std::string body;
    size_t consumed;
    if (has_te && te_h == "chunked") {
      bool too_large = false;
      long r = parse_chunked(c->in, end + 4, opts_.max_body, &body, &too_large);
      if (too_large) {
        c->close_after = true;
        return send(c, Response{413, error_body("Request body is over the limit of " + std::to_string(opts_.max_body) + " bytes")}, false);
      }
      if (r == -2) return bad("Malformed chunked body");
      if (r == -1) {
        if (c->close_after) close_conn(c);
        return;
      }
      consumed = size_t(r);
    } else if (has_cl) {
      const std::string& len = cl_h;
      if (!all_digits(len)) return bad("Invalid Content-Length");
      if (len.size() > 15 || std::stoll(len) > opts_.max_body) {
        c->close_after = true;
        return send(c, Response{413, error_body("Request body of " + len + " bytes is over the limit of " + std::to_string(opts_.max_body) + " bytes")}, false);
      }
      size_t n = size_t(std::stoll(len));
      if (c->in.size() < end + 4 + n) {
        if (c->close_after) close_conn(c);
        return;
      }
      body = c->in.substr(end + 4, n);
      consumed = end + 4 + n;
    } else {
      consumed = end + 4;
    }
    c->in.erase(0, consumed);
    Response r;
    c->busy = true;
    c->request_seq++;
    if (handle(c, method, target, body, keep_alive, &r)) send(c, r, keep_alive);
    else return;  // answered later, from the mailbox
  }
}

void RestLoop::send(Conn* c, const Response& r, bool keep_alive) {
  char head[256];
  int n = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: %s\r\n\r\n",
                   r.status, reason(r.status), r.ctype, r.body.size(), keep_alive ? "keep-alive" : "close");
  c->out.reserve(c->out.size() + size_t(n) + r.body.size());
  c->out.append(head, size_t(n));
  c->out += r.body;
  c->busy = false;
  if (!keep_alive) c->close_after = true;
  flush(c);
}

void RestLoop::flush(Conn* c) {
  while (c->out_off < c->out.size()) {
    ssize_t n = ::send(c->fd, c->out.data() + c->out_off, c->out.size() - c->out_off, MSG_NOSIGNAL);
    if (n > 0) {
      c->out_off += size_t(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!c->want_write) {
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
        ev.data.u64 = c->id;
        epoll_ctl(ep_, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_write = true;
      }
      return;
    }
    close_conn(c);
    return;
  }
  c->out.clear();
  c->out_off = 0;
  if (c->want_write) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = c->id;
    epoll_ctl(ep_, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_write = false;
  }
  if (c->close_after && !c->busy && !c->draining) {
    shutdown(c->fd, SHUT_WR);
    c->draining = true;
    c->in.clear();
    c->drain_until = steady_now() + 2.0;
  }
}

void RestLoop::post(uint64_t conn, uint64_t seq, Response r, bool keep_alive) {
  {
    std::lock_guard<std::mutex> g(mail_mu_);
    mail_.push_back(Mail{conn, seq, std::move(r), keep_alive});
  }
  uint64_t one = 1;
  ssize_t ignored = write(efd_, &one, sizeof one);
  (void)ignored;
}

void RestLoop::drain_mail() {
  std::vector<Mail> mail;
  {
    std::lock_guard<std::mutex> g(mail_mu_);
    mail.swap(mail_);
  }
  for (auto& m : mail) {
    auto it = conns_.find(m.conn);
    if (it == conns_.end() || it->second->request_seq != m.seq || !it->second->busy) continue;
    pending_.erase(m.conn);
    Conn* c = it->second;
    send(c, m.r, m.keep_alive);
    if (conns_.count(m.conn)) try_parse(c);
  }
}

void RestLoop::check_timeouts() {
  double now = steady_now();
  std::vector<uint64_t> late;
  for (auto& kv : pending_) {
    auto it = conns_.find(kv.first);
    if (it != conns_.end() && it->second->deadline && now > it->second->deadline) late.push_back(kv.first);
  }
  for (uint64_t id : late) {
    Conn* c = conns_[id];
    Pending pd = pending_[id];
    pending_.erase(id);
    Status s = Error(DEADLINE_EXCEEDED, "Deadline exceeded while waiting for the batch to run");
    p_->record(pd.name, s.code, pd.started, "REST");
    c->request_seq++;  // the batch's late answer is dropped
    send(c, error_response(s), true);
  }
}

bool RestLoop::handle(Conn* c, const std::string& method, const std::string& target, std::string& body,
                      bool keep_alive, Response* r) {
  std::string path = target.substr(0, target.find('?'));
  if (!opts_.metrics_path.empty() && path == opts_.metrics_path && method == "GET") {
    *r = Response{200, p_->metrics->render(), "text/plain; version=0.0.4"};
    return true;
  }
  ModelPath m;
  bool matched = match_model_path(path, &m);
  const std::string& rest = m.rest;
  bool has_rest = m.has_rest;
  if (!matched || (method == "GET" && has_rest && rest != "/metadata") ||
      (method == "POST" && (!has_rest || rest == "/metadata")) || (method != "GET" && method != "POST")) {
    if (path.compare(0, 4, "/v1/") == 0) *r = Response{400, error_body("Malformed request: " + method + " " + target)};
    else *r = Response{404, error_body("Not found: " + method + " " + target)};
    return true;
  }
  const std::string& name = m.name;
  int vcase = 0;
  int64_t version = 0;
  std::string label;
  if (m.has_version) {
    if (!all_digits(m.version) || m.version.size() > 18) {
      *r = Response{400, error_body("Malformed request: " + method + " " + target)};
      return true;
    }
    vcase = 2;
    version = std::stoll(m.version);
  } else if (m.has_label) {
    vcase = 4;
    label = m.label;
  }
  if (!has_rest) {
    *r = model_status(name, vcase, version, label);
    return true;
  }
  if (rest == "/metadata") {
    *r = metadata(name, vcase, version, label);
    return true;
  }
  if (rest != ":predict") {
    *r = error_response(Error(UNIMPLEMENTED, rest.substr(1) + " is not implemented by the reference server; use :predict"));
    return true;
  }
  return predict(c, name, vcase, version, label, body, keep_alive, r);
}

Response RestLoop::model_status(const std::string& name, int vcase, int64_t version, const std::string& label) {
  std::vector<VersionStatus> list;
  Status s = p_->manager->statuses(name, vcase, version, label, &list);
  if (!s.ok()) return error_response(s);
  std::string out = "{\"model_version_status\":[";
  for (size_t i = 0; i < list.size(); i++) {
    auto& st = list[i];
    out += (i ? ",{" : "{");
    out += "\"version\":\"" + std::to_string(st.version) + "\",\"state\":\"" + state_name(st.state) +
           "\",\"status\":{\"error_code\":" + json_str(st.error_code) + ",\"error_message\":" + json_str(st.error_message) + "}}";
  }
  return Response{200, out + "]}"};
}

Response RestLoop::metadata(const std::string& name, int vcase, int64_t version, const std::string& label) {
  std::shared_ptr<LoadedModel> model;
  Status s = p_->manager->resolve(name, vcase, version, label, &model);
  if (!s.ok()) return error_response(s);
  std::string sigs = "{";
  bool first = true;
  for (auto& kv : model->signatures) {
    sigs += (first ? "" : ",") + json_str(kv.first) + ":" + kv.second.json;
    first = false;
  }
  sigs += "}";
  return Response{200, "{\"model_spec\":{\"name\":" + json_str(name) + ",\"signature_name\":\"\",\"version\":\"" +
                           std::to_string(model->version) + "\"},\"metadata\":{\"signature_def\":{\"signature_def\":" +
                           sigs + "}}}"};
}

namespace {
Status rows_to_inputs(const JValue& instances, const Signature& sig, std::vector<std::pair<std::string, Tensor>>* given) {
  if (!instances.IsArray()) return Invalid("'instances' must be a JSON list");
  if (instances.Empty()) return Invalid("'instances' is empty: send at least one instance");
  bool named = true;
  for (auto& i : instances.GetArray()) named &= i.IsObject() && !member(i, "b64");
  if (named) {
    auto first = members(instances[0]);
    std::vector<std::string> keys;
    for (auto& kv : first) keys.push_back(kv.first);
    std::sort(keys.begin(), keys.end());
    std::vector<std::vector<std::pair<std::string, const JValue*>>> all;
    for (auto& i : instances.GetArray()) {
      auto ms = members(i);
      std::vector<std::string> ks;
      for (auto& kv : ms) ks.push_back(kv.first);
      std::sort(ks.begin(), ks.end());
      if (ks != keys) return Invalid("Expecting object with the same keys in every instance of 'instances'");
      all.push_back(std::move(ms));
    }
    for (auto& kv : first) {
      const std::string& k = kv.first;
      const TensorSpec* spec = sig.input(k);
      if (!spec)
        return Invalid("input tensor alias not found in signature: " + k + ". Inputs expected to be in the set " +
                       sig.input_set() + ".");
      std::vector<const JValue*> children;
      for (auto& ms : all)
        for (auto& m : ms)
          if (m.first == k) children.push_back(m.second);
      Tensor t;
      Status s = json_to_tensor(children, true, k, spec->dtype, &t);
      if (!s.ok()) return s;
      given->emplace_back(k, std::move(t));
    }
    return Status::Ok();
  }
  if (sig.inputs.size() != 1) {
    std::string names;
    for (size_t i = 0; i < sig.inputs.size(); i++) names += (i ? ", " : "") + sig.inputs[i].alias;
    return Invalid("The signature has " + std::to_string(sig.inputs.size()) + " inputs (" + names +
                   "): each instance must be an object naming them");
  }
  Tensor t;
  Status s = json_value_to_tensor(instances, sig.inputs[0].alias, sig.inputs[0].dtype, &t);
  if (!s.ok()) return s;
  given->emplace_back(sig.inputs[0].alias, std::move(t));
  return Status::Ok();
}

Status columns_to_inputs(const JValue& inputs, const Signature& sig, std::vector<std::pair<std::string, Tensor>>* given) {
  if (inputs.IsObject() && !(inputs.MemberCount() >= 1 && members(inputs).size() == 1 && member(inputs, "b64"))) {
    for (auto& kv : members(inputs)) {
      const TensorSpec* spec = sig.input(kv.first);
      if (!spec)
        return Invalid("input tensor alias not found in signature: " + kv.first + ". Inputs expected to be in the set " +
                       sig.input_set() + ".");
      Tensor t;
      Status s = json_value_to_tensor(*kv.second, kv.first, spec->dtype, &t);
      if (!s.ok()) return s;
      given->emplace_back(kv.first, std::move(t));
    }
    return Status::Ok();
  }
  if (sig.inputs.size() != 1)
    return Invalid("The signature has " + std::to_string(sig.inputs.size()) +
                   " inputs: 'inputs' must be an object naming them");
  Tensor t;
  Status s = json_value_to_tensor(inputs, sig.inputs[0].alias, sig.inputs[0].dtype, &t);
  if (!s.ok()) return s;
  given->emplace_back(sig.inputs[0].alias, std::move(t));
  return Status::Ok();
}

std::string render_result(const Signature& sig, const std::vector<Tensor>& outputs, const std::vector<bool>& keep, bool row) {
  rapidjson::StringBuffer sb;
  Writer w(sb);
  std::vector<size_t> named;
  for (size_t i = 0; i < outputs.size(); i++)
    if (keep[i]) named.push_back(i);
  w.StartObject();
  w.Key(row ? "predictions" : "outputs");
  if (named.size() == 1) {
    write_tensor(w, outputs[named[0]], binary_output(sig.outputs[named[0]].alias));
  } else if (!row) {
    w.StartObject();
    for (size_t i : named) {
      w.Key(sig.outputs[i].alias.c_str());
      write_tensor(w, outputs[i], binary_output(sig.outputs[i].alias));
    }
    w.EndObject();
  } else {
    w.StartArray();
    int64_t n = named.empty() || outputs[named[0]].shape.empty() ? 0 : outputs[named[0]].shape[0];
    for (int64_t r = 0; r < n; r++) {
      w.StartObject();
      for (size_t i : named) {
        w.Key(sig.outputs[i].alias.c_str());
        write_row(w, outputs[i], r, binary_output(sig.outputs[i].alias));
      }
      w.EndObject();
    }
    w.EndArray();
  }
  w.EndObject();
  return sb.GetString();
}
}  // namespace

bool RestLoop::predict(Conn* c, const std::string& name, int vcase, int64_t version, const std::string& label,
                       std::string& body, bool keep_alive, Response* r) {
  double started = steady_now();
  auto fail = [&](const Status& s) {
    p_->record(name, s.code, started, "REST");
    *r = error_response(s);
    return true;
  };
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseNanAndInfFlag | rapidjson::kParseFullPrecisionFlag | rapidjson::kParseValidateEncodingFlag | rapidjson::kParseIterativeFlag>(
      body.data(), body.size());
  if (doc.HasParseError())
    return fail(Invalid("JSON Parse error: " + std::string(rapidjson::GetParseError_En(doc.GetParseError())) + " at offset " +
                        std::to_string(doc.GetErrorOffset())));
  if (!doc.IsObject()) return fail(Invalid("JSON Value: request body must be a JSON object"));
  const JValue* sn = member(doc, "signature_name");
  if (sn && !sn->IsString()) return fail(Invalid("'signature_name' must be a string"));
  std::string sig_name = sn ? std::string(sn->GetString(), sn->GetStringLength()) : "";
  std::shared_ptr<LoadedModel> model;
  const Signature* sig;
  Status s = p_->resolve(name, vcase, version, label, sig_name, &model, &sig);
  if (!s.ok()) return fail(s);
  const JValue* inst = member(doc, "instances");
  const JValue* cols = member(doc, "inputs");
  if (inst && cols) return fail(Invalid("Not both 'instances' and 'inputs' may be specified in the request"));
  if (!inst && !cols) return fail(Invalid("Missing 'inputs' or 'instances' key"));
  std::vector<std::pair<std::string, Tensor>> given;
  s = inst ? rows_to_inputs(*inst, *sig, &given) : columns_to_inputs(*cols, *sig, &given);
  if (!s.ok()) return fail(s);
  std::vector<std::string> filter;
  const JValue* of = member(doc, "output_filter");
  if (of && of->IsArray())
    for (auto& v : of->GetArray()) filter.push_back(v.IsString() ? std::string(v.GetString(), v.GetStringLength()) : "");
  std::vector<bool> keep;
  s = Predictor::select_outputs(*sig, filter, &keep);
  if (!s.ok()) return fail(s);
  double deadline = started + opts_.timeout_s;
  bool row = inst != nullptr;
  // Answered on this thread (no batching) or later from a batch thread, through the mailbox.
  struct Sync {
    std::mutex mu;
    bool on_loop = true, done = false;
    Response r;
  };
  auto sync = std::make_shared<Sync>();
  uint64_t conn = c->id, seq = c->request_seq;
  Predictor* p = p_;
  RestLoop* self = this;
  p_->run(name, model, sig, given, deadline,
          [=](const Status& st, std::vector<Tensor>&& outputs) {
            Response resp;
            if (!st.ok()) {
              p->record(name, st.code, started, "REST");
              resp = error_response(st);
            } else {
              resp = Response{200, render_result(*sig, outputs, keep, row)};
              p->record(name, OK, started, "REST");
            }
            (void)model;
            std::unique_lock<std::mutex> g(sync->mu);
            if (sync->on_loop) {
              sync->done = true;
              sync->r = std::move(resp);
            } else {
              g.unlock();
              self->post(conn, seq, std::move(resp), keep_alive);
            }
          });
  {
    std::lock_guard<std::mutex> g(sync->mu);
    sync->on_loop = false;
    if (sync->done) {
      *r = std::move(sync->r);
      return true;
    }
  }
  pending_[c->id] = Pending{seq, started, name};
  c->deadline = deadline + 1.0;
  return false;
}

bool RestFront::start(std::string* error) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  std::string port = std::to_string(opts_.port);
  int rc = getaddrinfo(opts_.bind_address.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) {
    *error = "cannot listen for REST on " + opts_.bind_address + ":" + port + ": " + gai_strerror(rc);
    return false;
  }
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
    *error = "cannot listen for REST on " + opts_.bind_address + ":" + port + ": " + strerror(errno);
    ::close(fd);
    freeaddrinfo(res);
    return false;
  }
  freeaddrinfo(res);
  listen_fd_ = fd;
  for (int i = 0; i < opts_.threads; i++)
    threads_.emplace_back([this] {
      RestLoop loop(this);
      loop.run();
    });
  return true;
}

void RestFront::stop() {
  stopping_ = true;
  for (auto& t : threads_) t.join();
  threads_.clear();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
}
