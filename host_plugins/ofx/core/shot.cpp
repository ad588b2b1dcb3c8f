#include "shot.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <sstream>

namespace wd {

std::string Params::signature() const {
  std::ostringstream os;
  os.precision(17);
  os << task << '|' << (task == "upscale" ? scale : 0) << '|' << strength << '|' << steps << '|'
     << seed << '|' << guidance << '|' << noise << '|' << (task == "inpaint" ? propagate : 0)
     << '|' << model;
  return os.str();
}

void Params::pack(Packer& pk) const {
  int n = 4 + (guidance >= 0) + (task == "upscale") + (task == "inpaint") + (strength > 0) +
          (steps > 0) + !model.empty();
  pk.pack_map(n);
  pk.pack("task");
  pk.pack(task);
  pk.pack("seed");
  pk.pack(seed);
  if (guidance >= 0) {
    pk.pack("guidance");
    pk.pack(guidance);
  }
  pk.pack("noise");
  pk.pack(noise);
  pk.pack("composite");
  pk.pack(true);
  if (task == "upscale") {
    pk.pack("scale");
    pk.pack(scale);
  }
  if (task == "inpaint") {
    pk.pack("propagate");
    pk.pack(propagate);
  }
  if (strength > 0) {
    pk.pack("strength");
    pk.pack(strength);
  }
  if (steps > 0) {
    pk.pack("steps");
    pk.pack(steps);
  }
  if (!model.empty()) {
    pk.pack("model");
    pk.pack(model);
  }
}

FrameRange shot_range(RangeMode mode, FrameRange clip, FrameRange in_out, FrameRange custom,
                      int handles) {
  FrameRange r = mode == RangeMode::WholeClip ? clip : mode == RangeMode::InOut ? in_out : custom;
  if (mode != RangeMode::WholeClip) {
    r.first -= std::max(0, handles);
    r.last += std::max(0, handles);
  }
  r.first = std::max(r.first, clip.first);
  r.last = std::min(r.last, clip.last);
  return r;
}

Session::Session(const std::string& address, Timeouts timeouts)
    : client_(std::make_unique<Client>(address, timeouts)) {}

std::string Session::hello(const AbortFn& abort) {
  Reply r = client_->request("hello", [](Packer& pk) {
    pk.pack_map(1);
    pk.pack("client");
    pk.pack("warpdiff-ofx");
  }, {}, abort);
  return r.str("server") + " " + r.str("version");
}

int frames_per_batch(const ShotLayout& layout, int batch) {
  // A large frame goes alone: the server starts storing it as soon as it is read, and fewer
  // buffers are touched for the first time (fresh memory is the slow part of packing).
  const std::size_t item = layout.dtype == "uint8" ? 1 : layout.dtype == "uint16" ? 2 : 4;
  const std::size_t frame_bytes = static_cast<std::size_t>(std::max(0, layout.height)) *
                                  static_cast<std::size_t>(std::max(0, layout.width)) *
                                  (layout.channels * item + (layout.matte == MatteMode::Masks ? 4 : 0));
  const std::size_t fit = kBatchBytes / std::max<std::size_t>(1, frame_bytes);
  return static_cast<int>(std::clamp<std::size_t>(fit, 1, std::clamp(batch, 1, 64)));
}

std::string Session::upload(const Params& params, const ShotLayout& layout,
                            const FrameSource& frames, const FrameSource& mattes,
                            const AbortFn& abort, const ProgressFn& progress, int batch,
                            UploadStats* stats) {
  if (layout.n_frames < 1) throw Error("bad_body", "the shot has no frames");
  // open_shot is answered after the server planned the shot (the first one of a server loads
  // its model): the first batch is read meanwhile, and sent once the reply gives its token.
  const std::string open_id = client_->post("open_shot", [&](Packer& pk) {
    const bool masks = layout.matte != MatteMode::None;
    pk.pack_map(6 + masks);
    pk.pack("request");
    params.pack(pk);
    pk.pack("n_frames");
    pk.pack(layout.n_frames);
    pk.pack("height");
    pk.pack(layout.height);
    pk.pack("width");
    pk.pack(layout.width);
    pk.pack("channels");
    pk.pack(layout.channels);
    pk.pack("dtype");
    pk.pack(layout.dtype);
    if (masks) {
      pk.pack("masks");
      pk.pack(layout.matte == MatteMode::Alpha ? "alpha" : "masks");
    }
  }, {}, abort);
  std::string token;
  const bool masks = layout.matte == MatteMode::Masks;
  batch = frames_per_batch(layout, batch);
  // Batches in flight: as many as the server allows (open_shot's batch_limit), at most 4.
  int window = 0;
  // `window` batches on the wire (or waiting for their reply) and one being read. The pool
  // keeps at most that many idle buffers; it allocates only when none is idle, so the
  // in-flight bound below bounds its allocations.
  PackedPool pool(static_cast<std::size_t>((kMaxWindow + 1) * batch) * (masks ? 2 : 1));
  // Batch k is read while batches k-window..k-1 are in flight, and posted as soon as the
  // oldest one's reply frees its slot: the server always has the next batch to store. Each
  // batch is held until its reply, so at most `window` batches (plus the one read) live here.
  std::deque<std::string> in_flight;
  int max_in_flight = 0;
  struct Forget {  // an upload that throws (abort, error): its other replies are not awaited
    Client& c;
    std::deque<std::string>& ids;
    const std::string& open_id;
    const std::string& token;
    ~Forget() {
      if (token.empty()) c.forget(open_id);
      for (const std::string& id : ids) c.forget(id);
    }
  } forget{*client_, in_flight, open_id, token};
  for (int start = 0; start < layout.n_frames; start += batch) {
    const int n = std::min(batch, layout.n_frames - start);
    Parts parts;  // frames, then mattes
    parts.reserve(static_cast<std::size_t>(n) * 2);
    for (int i = 0; i < n; ++i) {
      if (abort && abort()) throw Aborted();
      std::shared_ptr<Packed> p = pool.get();
      frames(start + i, *p);
      parts.push_back(std::move(p));
    }
    if (masks)
      for (int i = 0; i < n; ++i) {
        std::shared_ptr<Packed> p = pool.get();
        mattes(start + i, *p);
        parts.push_back(std::move(p));
      }
    if (token.empty()) {  // the first batch is read: now its token is needed
      Reply opened = client_->await(open_id, "open_shot", abort);
      token = opened.str("upload");
      if (token.empty()) throw Error("bad_reply", "open_shot: the reply has no upload token");
      window = static_cast<int>(std::clamp<std::int64_t>(opened.integer("batch_limit", 2), 1, kMaxWindow));
    }
    if (static_cast<int>(in_flight.size()) >= window) {
      client_->await(in_flight.front(), "add_frames", abort);
      in_flight.pop_front();
    }
    in_flight.push_back(client_->post("add_frames", [&](Packer& pk) {
      pk.pack_map(3 + masks);
      pk.pack("upload");
      pk.pack(token);
      pk.pack("start");
      pk.pack(start);
      pk.pack("frames");
      pk.pack_array(n);
      for (int i = 0; i < n; ++i) pack_descriptor(pk, i, *parts[i]);
      if (masks) {
        pk.pack("masks");
        pk.pack_array(n);
        for (int i = 0; i < n; ++i) pack_descriptor(pk, n + i, *parts[n + i]);
      }
    }, parts, abort));
    parts.clear();  // ZeroMQ holds them until sent
    max_in_flight = std::max(max_in_flight, static_cast<int>(in_flight.size()));
    if (progress) progress(start, layout.n_frames);
  }
  for (; !in_flight.empty(); in_flight.pop_front())
    client_->await(in_flight.front(), "add_frames", abort);
  if (stats) *stats = {pool.allocated(), batch, window, max_in_flight};
  if (progress) progress(layout.n_frames, layout.n_frames);
  Reply started = client_->request("start_shot", [&](Packer& pk) {
    pk.pack_map(2);
    pk.pack("upload");
    pk.pack(token);
    pk.pack("subscribe");
    pk.pack(false);
  }, {}, abort);
  return started.str("key");
}

void Session::get_frame(const std::string& key, int t, const AbortFn& abort,
                        const std::function<void(const Reply::Image&)>& sink) {
  Reply r = client_->request("get_frame", [&](Packer& pk) {
    pk.pack_map(3);
    pk.pack("key");
    pk.pack(key);
    pk.pack("frame");
    pk.pack(t);
    pk.pack("dtype");
    pk.pack("float32");
  }, {}, abort, true);
  Reply::Image im = r.image("image");
  if (im.dtype != "float32") throw Error("bad_reply", "get_frame: expected float32");
  sink(im);
}

ShotStatus Session::status(const std::string& key) {
  Reply r = client_->request("status", [&](Packer& pk) {
    pk.pack_map(1);
    pk.pack("key");
    pk.pack(key);
  });
  return {r.str("state"), static_cast<int>(r.integer("done")),
          static_cast<int>(r.integer("n_frames")), r.str("message")};
}

void Session::cancel(const std::string& key) {
  client_->request("cancel", [&](Packer& pk) {
    pk.pack_map(1);
    pk.pack("key");
    pk.pack(key);
  });
}

double eta_seconds(const ShotStatus& s, int done0, double elapsed_s) {
  if (s.done <= done0 || elapsed_s <= 0) return -1;
  return elapsed_s / (s.done - done0) * (s.n_frames - s.done);
}

std::string describe(const ShotStatus& s, double eta_s) {
  std::ostringstream os;
  if (s.state == "finished") os << "done (" << s.n_frames << " frames)";
  else if (s.state == "running" || s.state == "paused" || s.state == "idle") {
    os << s.state << ": frame " << std::min(s.done + 1, s.n_frames) << " of " << s.n_frames;
    if (eta_s >= 0) os << ", ETA " << static_cast<long>(std::lround(eta_s)) << " s";
  }
  else if (s.state == "error") os << "error: " << s.message;
  else os << s.state << (s.message.empty() ? "" : ": " + s.message);
  return os.str();
}

}  // namespace wd
