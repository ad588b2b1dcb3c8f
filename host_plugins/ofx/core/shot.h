// A shot as the effect sees it: its parameters, its frame range with handles, the chunked
// upload of its frames and mattes, and "frame t of this shot". No OpenFX dependency.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "client.h"
#include "image.h"

namespace wd {

struct Params {
  std::string task = "inpaint";  // "inpaint" (remove object) or "upscale"
  int scale = 2;
  double strength = 0.0;  // 0: the model's default
  int steps = 0;          // 0: the model's default
  int seed = 0;
  double guidance = -1.0;  // < 0: the task's default (not sent)
  std::string noise = "gp";
  int propagate = 8;
  std::string model;  // empty: the server's
  std::string signature() const;  // every output-relevant field, for "is this a new shot?"
  void pack(Packer& pk) const;    // the protocol's `request` map
};

enum class RangeMode { WholeClip = 0, InOut = 1, Custom = 2 };

struct FrameRange {
  int first = 0, last = -1;  // inclusive
  int count() const { return last >= first ? last - first + 1 : 0; }
  bool contains(int t) const { return t >= first && t <= last; }
};

// The shot's frames: the chosen range widened by `handles` on each side, inside the clip.
FrameRange shot_range(RangeMode mode, FrameRange clip, FrameRange in_out, FrameRange custom,
                      int handles);

enum class MatteMode { None, Alpha, Masks };  // upscale / frames' alpha / separate mattes

struct ShotLayout {
  int n_frames = 0;
  int height = 0, width = 0, channels = 4;
  std::string dtype = "float32";
  MatteMode matte = MatteMode::Alpha;
};

// Reads frame i of the shot (or its matte when MatteMode::Masks) into `out`, a buffer reused
// from an earlier frame (pack_frame_into / pack_matte_into). Called in order 0..n-1; the
// images are sent batch by batch and their buffers come back for later frames.
using FrameSource = std::function<void(int i, Packed& out)>;
using ProgressFn = std::function<void(int sent, int total)>;

struct ShotStatus {
  std::string state;  // idle queued running paused finished cancelled error
  int done = 0, n_frames = 0;
  std::string message;
};

constexpr std::size_t kBatchBytes = 32u << 20;  // bytes of frames per add_frames (see upload)
constexpr int kMaxWindow = 4;  // batches in flight at most, whatever the server allows

// Frames per add_frames: at most `batch` (1..64), and no more than kBatchBytes of frames and
// mattes unless one frame alone is larger (then 1).
int frames_per_batch(const ShotLayout& layout, int batch);

struct UploadStats {  // what an upload did (diagnostics, tests)
  std::size_t buffers = 0;  // frame buffers allocated
  int batch = 0;            // frames per batch
  int window = 0;           // batches allowed in flight (the server's batch_limit, at most 4)
  int max_in_flight = 0;    // the most batches that were in flight at once
};

class Session {
 public:
  Session(const std::string& address, Timeouts timeouts);
  Client& client() { return *client_; }

  // hello: the server is there and speaks protocol 1; returns its version line.
  std::string hello(const AbortFn& abort = {});
  // Chunked upload (open_shot, add_frames in batches, start_shot); returns the shot key. A
  // batch holds at most `batch` frames and, unless one frame is larger, at most kBatchBytes
  // of frames and mattes. The first batch is read while open_shot is answered. As many
  // batches as the server allows (open_shot's batch_limit, at most 4) are in flight while the
  // next one is read, so about (limit + 1) batches of frames
  // (and mattes) are held here, in buffers reused from frame to frame; `stats`, when given,
  // gets what the upload did.
  std::string upload(const Params& params, const ShotLayout& layout, const FrameSource& frames,
                     const FrameSource& mattes, const AbortFn& abort,
                     const ProgressFn& progress = {}, int batch = 4,
                     UploadStats* stats = nullptr);
  // Frame t of the shot (float32 [h, w, 3]) handed to `sink` straight from the received
  // message (no copy); waits while it is made, the host's abort honoured.
  void get_frame(const std::string& key, int t, const AbortFn& abort,
                 const std::function<void(const Reply::Image&)>& sink);
  ShotStatus status(const std::string& key);
  void cancel(const std::string& key);

 private:
  std::unique_ptr<Client> client_;
};

// "queued" / "running: frame 3 of 10, ETA 42 s" / "done (10 frames)" / "error: ..." for the
// status line; `eta_s` < 0: unknown.
std::string describe(const ShotStatus& s, double eta_s = -1);

// Seconds left at the pace seen since `done0` frames were finished `elapsed_s` ago; -1 when
// no frame was finished since.
double eta_seconds(const ShotStatus& s, int done0, double elapsed_s);

}  // namespace wd
