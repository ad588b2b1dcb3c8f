// The protocol client (server/PROTOCOL.md) over one ZeroMQ DEALER socket: msgpack envelope +
// raw binary parts, replies matched by parent id, every wait polled in short slices so that a
// host's abort and the timeout are honoured. One Client per effect instance; thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <msgpack.hpp>
#include <zmq.hpp>

#include "image.h"

namespace wd {

// An error reply or a local failure. `code`: the protocol's codes plus "unreachable".
struct Error : std::runtime_error {
  Error(std::string code, const std::string& message)
      : std::runtime_error(message), code(std::move(code)) {}
  std::string code;
};

// The host asked to stop (abort) while we waited.
struct Aborted : std::runtime_error {
  Aborted() : std::runtime_error("aborted by the host") {}
};

using AbortFn = std::function<bool()>;
using Packer = msgpack::packer<msgpack::sbuffer>;
using BodyFn = std::function<void(Packer&)>;  // packs the body map
// Binary parts: shared so that ZeroMQ sends them without a copy and frees them when done.
using Parts = std::vector<std::shared_ptr<const Packed>>;

struct Reply {
  std::string type;
  msgpack::object_handle envelope;
  msgpack::object body;  // a map (view into `envelope`)
  std::vector<zmq::message_t> parts;

  const msgpack::object* find(const char* key) const;
  std::string str(const char* key, const std::string& fallback = "") const;
  std::int64_t integer(const char* key, std::int64_t fallback = 0) const;
  // The {part, dtype, shape} image descriptor at `key`, checked against its part.
  struct Image { const std::uint8_t* data; std::string dtype; int h, w, c; };
  Image image(const char* key) const;
};

const msgpack::object* map_find(const msgpack::object& map, const char* key);
void pack_descriptor(Packer& pk, int part, const Packed& image);

struct Timeouts {
  double reply_s = 5.0;      // a reply to a quick request (hello, status, add_frames)
  double liveness_s = 5.0;   // a heartbeat during a long wait
  double compute_s = 3600.0; // the longest wait for a frame that is being made
};

class Client {
 public:
  explicit Client(std::string address, Timeouts timeouts = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const std::string& address() const { return address_; }
  const Timeouts& timeouts() const { return timeouts_; }

  // Sends one request and waits for its reply. `long_wait`: the reply may take long (a frame
  // being made): heartbeats check that the server is alive every `liveness_s`. Throws Error
  // (error reply, unreachable), Aborted (abort() became true).
  Reply request(const std::string& type, const BodyFn& body, const Parts& parts = {},
                const AbortFn& abort = {}, bool long_wait = false);

  // The two halves of request(), to keep several requests in flight (pipelined upload):
  // post() sends and returns the request's id; await() waits for that id's reply.
  std::string post(const std::string& type, const BodyFn& body, const Parts& parts = {},
                   const AbortFn& abort = {});
  Reply await(const std::string& id, const std::string& type, const AbortFn& abort = {},
              bool long_wait = false);
  // A posted request whose reply will not be awaited (an upload given up): its reply, now or
  // later, is dropped instead of kept.
  void forget(const std::string& id);

 private:
  void reset();
  std::string send(const std::string& type, const BodyFn& body, const Parts& parts);
  bool receive(Reply& out, std::string& parent, int timeout_ms);
  [[noreturn]] void unreachable(const std::string& what, double seconds);

  std::string address_;
  Timeouts timeouts_;
  std::mutex mutex_;
  zmq::context_t context_;
  std::unique_ptr<zmq::socket_t> socket_;
  std::uint64_t next_id_ = 1;
  std::string prefix_;
  std::vector<std::pair<std::string, Reply>> early_;  // replies to posted, not awaited ids
  std::vector<std::string> posted_;
};

}  // namespace wd
