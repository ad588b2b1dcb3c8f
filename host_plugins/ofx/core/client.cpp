#include "client.h"

#include <algorithm>
#include <random>
#include <sstream>
#include <thread>

namespace wd {

using Clock = std::chrono::steady_clock;

const msgpack::object* map_find(const msgpack::object& map, const char* key) {
  if (map.type != msgpack::type::MAP) return nullptr;
  const std::size_t n = std::strlen(key);
  for (std::uint32_t i = 0; i < map.via.map.size; ++i) {
    const msgpack::object& k = map.via.map.ptr[i].key;
    if (k.type == msgpack::type::STR && k.via.str.size == n &&
        std::memcmp(k.via.str.ptr, key, n) == 0)
      return &map.via.map.ptr[i].val;
  }
  return nullptr;
}

const msgpack::object* Reply::find(const char* key) const { return map_find(body, key); }

std::string Reply::str(const char* key, const std::string& fallback) const {
  const msgpack::object* o = find(key);
  if (!o || o->type != msgpack::type::STR) return fallback;
  return std::string(o->via.str.ptr, o->via.str.size);
}

std::int64_t Reply::integer(const char* key, std::int64_t fallback) const {
  const msgpack::object* o = find(key);
  if (!o) return fallback;
  if (o->type == msgpack::type::POSITIVE_INTEGER) return static_cast<std::int64_t>(o->via.u64);
  if (o->type == msgpack::type::NEGATIVE_INTEGER) return o->via.i64;
  return fallback;
}

Reply::Image Reply::image(const char* key) const {
  const msgpack::object* d = find(key);
  if (!d || d->type != msgpack::type::MAP) throw Error("bad_reply", std::string("no ") + key);
  const msgpack::object* part = map_find(*d, "part");
  const msgpack::object* dtype = map_find(*d, "dtype");
  const msgpack::object* shape = map_find(*d, "shape");
  if (!part || part->type != msgpack::type::POSITIVE_INTEGER || !dtype ||
      dtype->type != msgpack::type::STR || !shape || shape->type != msgpack::type::ARRAY ||
      shape->via.array.size != 3)
    throw Error("bad_reply", std::string(key) + ": not a {part, dtype, shape} descriptor");
  Image im{nullptr, std::string(dtype->via.str.ptr, dtype->via.str.size), 0, 0, 0};
  int dims[3];
  for (int i = 0; i < 3; ++i) {
    const msgpack::object& s = shape->via.array.ptr[i];
    if (s.type != msgpack::type::POSITIVE_INTEGER || s.via.u64 > 65536)
      throw Error("bad_reply", std::string(key) + ": bad shape");
    dims[i] = static_cast<int>(s.via.u64);
  }
  im.h = dims[0], im.w = dims[1], im.c = dims[2];
  const std::size_t item = im.dtype == "uint8" ? 1 : im.dtype == "uint16" || im.dtype == "float16" ? 2 : 4;
  if (part->via.u64 >= parts.size())
    throw Error("bad_reply", std::string(key) + ": its binary part is missing");
  const zmq::message_t& m = parts[part->via.u64];
  if (m.size() != static_cast<std::size_t>(im.h) * im.w * im.c * item)
    throw Error("bad_reply", std::string(key) + ": its part has the wrong size");
  im.data = static_cast<const std::uint8_t*>(m.data());
  return im;
}

void pack_descriptor(Packer& pk, int part, const Packed& image) {
  pk.pack_map(3);
  pk.pack("part");
  pk.pack(part);
  pk.pack("dtype");
  pk.pack(image.dtype);
  pk.pack("shape");
  pk.pack_array(3);
  pk.pack(image.h);
  pk.pack(image.w);
  pk.pack(image.c);
}

Client::Client(std::string address, Timeouts timeouts)
    : address_(std::move(address)), timeouts_(timeouts), context_(1) {
  std::random_device rd;
  std::ostringstream os;
  os << std::hex << rd() << rd() << "-";
  prefix_ = os.str();
  reset();
}

Client::~Client() {
  try {
    socket_.reset();
    context_.close();
  } catch (...) {
  }
}

void Client::reset() {
  socket_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::dealer);
  socket_->set(zmq::sockopt::linger, 0);
  socket_->set(zmq::sockopt::immediate, 1);  // queue nothing for a server that is not there
  socket_->connect(address_);
}

std::string Client::send(const std::string& type, const BodyFn& body, const Parts& parts) {
  const std::string id = prefix_ + std::to_string(next_id_++);
  msgpack::sbuffer buf;
  Packer pk(buf);
  pk.pack_map(5);
  pk.pack("v");
  pk.pack(1);
  pk.pack("type");
  pk.pack(type);
  pk.pack("id");
  pk.pack(id);
  pk.pack("parent");
  pk.pack_nil();
  pk.pack("body");
  if (body) body(pk);
  else pk.pack_map(0);
  const auto more = parts.empty() ? zmq::send_flags::dontwait
                                  : zmq::send_flags::dontwait | zmq::send_flags::sndmore;
  // With `immediate`, a DEALER with no connected server refuses to queue: EAGAIN.
  if (!socket_->send(zmq::const_buffer(buf.data(), buf.size()), more))
    throw Error("unreachable", "");
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const auto flag = i + 1 < parts.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
    auto* hold = new std::shared_ptr<const Packed>(parts[i]);  // freed by ZeroMQ when sent
    zmq::message_t m(const_cast<std::uint8_t*>(parts[i]->bytes.data()), parts[i]->bytes.size(),
                     [](void*, void* h) { delete static_cast<std::shared_ptr<const Packed>*>(h); },
                     hold);
    socket_->send(m, flag);
  }
  return id;
}

bool Client::receive(Reply& out, std::string& parent, int timeout_ms) {
  zmq::pollitem_t item{socket_->handle(), 0, ZMQ_POLLIN, 0};
  if (zmq::poll(&item, 1, std::chrono::milliseconds(timeout_ms)) <= 0) return false;
  std::vector<zmq::message_t> frames;
  while (true) {
    zmq::message_t m;
    if (!socket_->recv(m, zmq::recv_flags::none)) return false;
    const bool more = m.more();
    frames.push_back(std::move(m));
    if (!more) break;
  }
  out = Reply{};
  parent.clear();
  try {
    out.envelope = msgpack::unpack(static_cast<const char*>(frames[0].data()), frames[0].size());
  } catch (const std::exception&) {
    return true;  // not ours to read; a server never sends these
  }
  const msgpack::object& env = out.envelope.get();
  const msgpack::object* type = map_find(env, "type");
  const msgpack::object* par = map_find(env, "parent");
  const msgpack::object* body = map_find(env, "body");
  if (type && type->type == msgpack::type::STR) out.type.assign(type->via.str.ptr, type->via.str.size);
  if (par && par->type == msgpack::type::STR) parent.assign(par->via.str.ptr, par->via.str.size);
  if (body) out.body = *body;
  frames.erase(frames.begin());
  out.parts = std::move(frames);
  return true;
}

void Client::unreachable(const std::string& what, double seconds) {
  reset();  // drop whatever is queued for a server that is not answering
  early_.clear();
  posted_.clear();
  std::ostringstream os;
  os << "no reply to " << what << " from the warpdiff server at " << address_ << " within "
     << seconds << " s. Start the server with: warpdiff serve (or set the Server address "
     << "parameter to where it runs)";
  throw Error("unreachable", os.str());
}

Reply Client::request(const std::string& type, const BodyFn& body, const Parts& parts,
                      const AbortFn& abort, bool long_wait) {
  const std::string id = post(type, body, parts, abort);
  return await(id, type, abort, long_wait);
}

std::string Client::post(const std::string& type, const BodyFn& body, const Parts& parts,
                         const AbortFn& abort) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto start = Clock::now();
  while (true) {  // no connected server yet (or any more): wait for one, up to reply_s
    try {
      std::string id = send(type, body, parts);
      posted_.push_back(id);
      return id;
    } catch (const Error&) {
      if (abort && abort()) throw Aborted();
      if (std::chrono::duration<double>(Clock::now() - start).count() > timeouts_.reply_s)
        unreachable(type, timeouts_.reply_s);
      zmq::pollitem_t item{socket_->handle(), 0, ZMQ_POLLOUT, 0};
      zmq::poll(&item, 1, std::chrono::milliseconds(25));
    }
  }
}

void Client::forget(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  posted_.erase(std::remove(posted_.begin(), posted_.end(), id), posted_.end());
  early_.erase(std::remove_if(early_.begin(), early_.end(),
                              [&](const std::pair<std::string, Reply>& e) { return e.first == id; }),
               early_.end());
}

Reply Client::await(const std::string& id, const std::string& type, const AbortFn& abort,
                    bool long_wait) {
  std::lock_guard<std::mutex> lock(mutex_);
  struct Forget {  // however this ends, `id` is no longer awaited
    Client& c;
    const std::string& id;
    ~Forget() {
      c.posted_.erase(std::remove(c.posted_.begin(), c.posted_.end(), id), c.posted_.end());
    }
  } forget{*this, id};
  auto finish = [&](Reply& reply) -> Reply {
    if (reply.type == "error")
      throw Error(reply.str("code", "internal"), reply.str("message", "the server reported an error"));
    return std::move(reply);
  };
  for (auto it = early_.begin(); it != early_.end(); ++it)
    if (it->first == id) {
      Reply r = std::move(it->second);
      early_.erase(it);
      return finish(r);
    }
  const auto start = Clock::now();
  auto last_sign = start;  // the last time the server showed it is alive
  std::string heartbeat_id;
  auto heartbeat_sent = start;
  const double limit = long_wait ? timeouts_.compute_s : timeouts_.reply_s;
  while (true) {
    if (abort && abort()) throw Aborted();
    Reply reply;
    std::string parent;
    if (receive(reply, parent, 25)) {
      if (parent == id) return finish(reply);
      if (!heartbeat_id.empty() && parent == heartbeat_id) {
        heartbeat_id.clear();
        last_sign = Clock::now();
      } else if (std::find(posted_.begin(), posted_.end(), parent) != posted_.end()) {
        early_.emplace_back(parent, std::move(reply));  // a pipelined request's reply
      }
      continue;  // else: a late reply to a request we gave up on
    }
    const auto now = Clock::now();
    const double waited = std::chrono::duration<double>(now - start).count();
    if (waited > limit) unreachable(type, limit);
    if (!long_wait) continue;
    if (heartbeat_id.empty() &&
        std::chrono::duration<double>(now - last_sign).count() > timeouts_.liveness_s / 2) {
      try {
        heartbeat_id = send("heartbeat", {}, {});
      } catch (const Error&) {
        unreachable("heartbeat", 0);
      }
      heartbeat_sent = now;
    }
    if (!heartbeat_id.empty() &&
        std::chrono::duration<double>(now - heartbeat_sent).count() > timeouts_.liveness_s)
      unreachable("heartbeat (while waiting for " + type + ")", timeouts_.liveness_s);
  }
}

}  // namespace wd
