// Unit tests of the core library (no OpenFX, no server): packing, mattes, ranges, the
// request body, and the client's timeout and cancellation against a silent ROUTER socket.
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <thread>

#include "client.h"
#include "image.h"
#include "shot.h"

static int failures = 0;
#define CHECK(cond)                                                     \
  do {                                                                  \
    if (!(cond)) {                                                      \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                       \
    }                                                                   \
  } while (0)

using namespace wd;

static float at(const Packed& p, int r, int x, int c) {
  float v;
  std::memcpy(&v, p.bytes.data() + ((static_cast<std::size_t>(r) * p.w + x) * p.c + c) * 4, 4);
  return v;
}

static void test_pack_float_bottom_up_offset_bounds() {
  // A 3x2 RGBA float image at bounds (10, 20)-(13, 22), padded rows; a 4x3 window around it.
  const int rb = 3 * 4 * 4 + 8;
  std::vector<std::uint8_t> buf(rb * 2, 0);
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 3; ++x)
      for (int c = 0; c < 4; ++c) {
        float v = static_cast<float>(100 * y + 10 * x + c);
        std::memcpy(buf.data() + y * rb + (x * 4 + c) * 4, &v, 4);
      }
  HostImage im{buf.data(), {10, 20, 13, 22}, rb, Depth::F32, 4};
  Packed p = pack_frame(im, {10, 20, 14, 23}, 4, false);
  CHECK(p.dtype == "float32" && p.h == 3 && p.w == 4 && p.c == 4);
  CHECK(at(p, 0, 0, 0) == 0.f);           // top row (y = 22) is outside the image
  CHECK(at(p, 1, 0, 0) == 100.f);         // y = 21: the image's second row
  CHECK(at(p, 2, 2, 3) == 23.f);          // y = 20, x = 12, alpha
  CHECK(at(p, 2, 3, 1) == 0.f);           // x = 13 is outside
  Packed rgb = pack_frame(im, {10, 20, 13, 22}, 3, false);
  CHECK(rgb.c == 3 && at(rgb, 0, 1, 2) == 112.f);
  Packed inv = pack_frame(im, {10, 20, 14, 22}, 4, true);
  CHECK(at(inv, 0, 0, 3) == 1.f - 103.f && at(inv, 0, 3, 3) == 1.f);  // outside: keep
}

static void test_pack_negative_rowbytes_u8_u16() {
  // Top-down storage: data points at row y1 (the bottom row), row bytes negative.
  std::vector<std::uint8_t> buf(2 * 8, 0);
  std::uint8_t* data = buf.data() + 8;  // row y=0 at offset 8, row y=1 at offset 0
  const std::uint8_t px0[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  const std::uint8_t px1[8] = {9, 10, 11, 12, 13, 14, 15, 16};
  std::memcpy(data, px0, 8);
  std::memcpy(data - 8, px1, 8);
  HostImage im{data, {0, 0, 2, 2}, -8, Depth::U8, 4};
  Packed p = pack_frame(im, {0, 0, 2, 2}, 4, false);
  CHECK(p.dtype == "uint8" && p.bytes[0] == 9 && p.bytes[8] == 1 && p.bytes[15] == 8);
  std::vector<std::uint16_t> s = {0, 65535, 1000, 7, 0, 0, 0, 0};
  HostImage im16{s.data(), {0, 0, 1, 2}, 8, Depth::U16, 4};
  Packed q = pack_frame(im16, {0, 0, 1, 2}, 4, true);
  std::uint16_t a;
  std::memcpy(&a, q.bytes.data() + 8 + 6, 2);  // bottom row (y=0) is the last; its alpha
  CHECK(q.dtype == "uint16" && a == 65535 - 7);
}

// A reused buffer holds the previous frame: packing into it must give exactly what a fresh
// buffer gives, whatever the sizes, bounds, channels and depths of the frames before.
static void test_reused_buffer_equals_fresh() {
  auto image = [](int w, int h, int x1, int y1, int nc, float base, std::vector<float>& px) {
    px.assign(static_cast<std::size_t>(w) * h * nc, 0.f);
    for (std::size_t i = 0; i < px.size(); ++i) px[i] = base + static_cast<float>(i % 997);
    return HostImage{px.data(), {x1, y1, x1 + w, y1 + h}, static_cast<std::ptrdiff_t>(w) * nc * 4,
                     Depth::F32, nc};
  };
  std::vector<float> a, b, c, d;
  const HostImage big = image(9, 7, 0, 0, 4, 1.f, a);      // fills the buffer with non-zeros
  const HostImage small = image(3, 2, 2, 1, 4, 500.f, b);  // inside a larger window: zeros around
  const HostImage rgb = image(5, 4, 0, 0, 3, 900.f, c);    // RGB host image: alpha 0
  const HostImage tiny = image(2, 2, 0, 0, 4, 77.f, d);    // a smaller frame: the buffer shrinks
  struct Case { const HostImage* im; Rect window; int channels; bool invert; };
  const Case cases[] = {{&big, {0, 0, 9, 7}, 4, false},   {&small, {0, 0, 9, 7}, 4, false},
                        {&big, {0, 0, 9, 7}, 4, true},    {&small, {0, 0, 9, 7}, 4, true},
                        {&rgb, {0, 0, 5, 4}, 4, false},   {&big, {1, 1, 6, 5}, 3, false},
                        {&tiny, {0, 0, 2, 2}, 4, false},  {&big, {-2, -1, 9, 7}, 4, false}};
  Packed reused;
  for (const Case& k : cases) {
    pack_frame_into(*k.im, k.window, k.channels, k.invert, reused);
    const Packed fresh = pack_frame(*k.im, k.window, k.channels, k.invert);
    CHECK(reused.h == fresh.h && reused.w == fresh.w && reused.c == fresh.c &&
          reused.dtype == fresh.dtype);
    CHECK(reused.bytes.size() == fresh.bytes.size() &&
          std::memcmp(reused.bytes.data(), fresh.bytes.data(), fresh.bytes.size()) == 0);
  }
  // A matte packed into a buffer that held a frame.
  pack_matte_into(small, {0, 0, 9, 7}, MatteChannel::Alpha, false, reused);
  const Packed fresh = pack_matte(small, {0, 0, 9, 7}, MatteChannel::Alpha, false);
  CHECK(reused.c == 1 && reused.bytes.size() == fresh.bytes.size() &&
        std::memcmp(reused.bytes.data(), fresh.bytes.data(), fresh.bytes.size()) == 0);
  // And fresh packing zeroes what lies outside the image (the reference above is right).
  CHECK(at(pack_frame(small, {0, 0, 9, 7}, 4, false), 0, 0, 0) == 0.f);
}

// The pool hands buffers back for reuse, keeps at most `keep` idle, and a buffer may outlive
// the pool (ZeroMQ frees a sent message later, on its own thread).
static void test_pool_reuse_and_bound() {
  std::shared_ptr<Packed> late;
  {
    PackedPool pool(2);
    const Packed* first = nullptr;
    {
      std::shared_ptr<Packed> a = pool.get();
      first = a.get();
      a->bytes.resize(64);
    }
    CHECK(pool.idle() == 1);
    std::shared_ptr<Packed> b = pool.get();
    CHECK(b.get() == first && b->bytes.size() == 64 && pool.allocated() == 1);
    std::vector<std::shared_ptr<Packed>> held;
    for (int i = 0; i < 5; ++i) held.push_back(pool.get());
    CHECK(pool.allocated() == 6);
    held.clear();
    b.reset();
    CHECK(pool.idle() == 2);  // the rest were freed
    late = pool.get();
    std::thread([&] { std::shared_ptr<Packed> other = pool.get(); }).join();  // another thread
    CHECK(pool.idle() == 1 && pool.allocated() == 6);  // `late` is out
  }
  late->bytes.resize(16);  // the pool is gone: this buffer is still valid and is freed alone
  late.reset();
}

static void test_mattes() {
  std::vector<float> px = {0.f, 0.f, 0.f, 1.f, 1.f, 0.5f, 0.f, 0.f};  // two RGBA pixels
  HostImage im{px.data(), {0, 0, 2, 1}, 32, Depth::F32, 4};
  Packed a = pack_matte(im, {0, 0, 2, 1}, MatteChannel::Alpha, false);
  CHECK(a.c == 1 && at(a, 0, 0, 0) == 1.f && at(a, 0, 1, 0) == 0.f);
  Packed r = pack_matte(im, {0, 0, 2, 1}, MatteChannel::Red, true);
  CHECK(at(r, 0, 0, 0) == 1.f && at(r, 0, 1, 0) == 0.f);
  Packed l = pack_matte(im, {0, 0, 2, 1}, MatteChannel::Luminance, false);
  CHECK(std::fabs(at(l, 0, 1, 0) - (0.2126f + 0.7152f * 0.5f)) < 1e-6f);
  std::vector<std::uint8_t> alpha = {255, 0};
  HostImage am{alpha.data(), {0, 0, 2, 1}, 2, Depth::U8, 1};
  Packed m = pack_matte(am, {0, 0, 3, 1}, MatteChannel::Red, false);  // alpha-only: its channel
  CHECK(at(m, 0, 0, 0) == 1.f && at(m, 0, 1, 0) == 0.f && at(m, 0, 2, 0) == 0.f);
}

static void test_unpack_and_copy() {
  const float src[2 * 2 * 3] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f,   // top row
                                0.7f, 0.8f, 0.9f, 1.0f, 1.5f, -1.f};  // bottom row
  std::vector<std::uint8_t> out(2 * 2 * 4, 0);
  HostImage dst{out.data(), {0, 0, 2, 2}, 8, Depth::U8, 4};
  unpack_into(src, 2, 2, 3, {0, 0, 2, 2}, dst, {0, 0, 2, 2});
  CHECK(out[0] == 179 && out[3] == 255);              // y=0 is the bottom row: 0.7 -> 179
  CHECK(out[4 + 1] == 255 && out[4 + 2] == 0);         // clamped
  CHECK(out[8] == 26);                                 // top row, 0.1 -> 26 (rounded)
  std::vector<float> f(2 * 2 * 4, -5.f);
  HostImage fd{f.data(), {0, 0, 2, 2}, 32, Depth::F32, 4};
  unpack_into(src, 2, 2, 3, {0, 0, 2, 2}, fd, {1, 0, 2, 1});  // only the render window
  CHECK(f[0] == -5.f && f[4] == 1.0f && f[8] == -5.f);
  bool threw = false;
  try {
    unpack_into(src, 2, 2, 3, {0, 0, 3, 2}, fd, {0, 0, 2, 2});
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw);
  std::vector<float> big(4 * 4 * 4, 0.f);
  HostImage bd{big.data(), {0, 0, 4, 4}, 64, Depth::F32, 4};
  std::vector<float> small = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  HostImage sd{small.data(), {0, 0, 2, 2}, 32, Depth::F32, 4};
  copy_image(sd, bd, {0, 0, 4, 4}, 2);
  CHECK(big[0] == 1 && big[4] == 1 && big[8] == 5 && big[(3 * 4 + 3) * 4 + 3] == 16);
}

// Float RGBA output (the SIMD path): every pixel of RGB and RGBA results, aligned and
// unaligned rows, a source narrower than the render window (zeros beside it), odd widths.
static void test_unpack_float_rgba_rows() {
  for (int c : {3, 4})
    for (int shift : {0, 1}) {  // shift 1: rows start 4 bytes off a 16-byte boundary
      const int w = 37, h = 5, ow = 41;
      std::vector<float> src(static_cast<std::size_t>(w) * h * c);
      for (std::size_t i = 0; i < src.size(); ++i) src[i] = 0.25f * static_cast<float>(i) - 3.f;
      const Rect srect{2, 0, 2 + w, h};  // the source covers x 2..38 of the 41-wide output
      std::vector<float> store(static_cast<std::size_t>(ow) * 4 * h + 8, -7.f);
      float* base = store.data() + (4 - shift) % 4;
      HostImage dst{base, {0, 0, ow, h}, static_cast<std::ptrdiff_t>(ow) * 16, Depth::F32, 4};
      unpack_into(src.data(), h, w, c, srect, dst, {0, 0, ow, h});
      bool same = true;
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < ow; ++x)
          for (int ch = 0; ch < 4; ++ch) {
            float want = 0.f;
            if (x >= srect.x1 && x < srect.x2) {
              const std::size_t i = (static_cast<std::size_t>(h - 1 - y) * w + (x - srect.x1)) * c;
              want = ch < 3 ? src[i + ch] : c == 4 ? src[i + 3] : 1.f;
            }
            same = same && base[(static_cast<std::size_t>(y) * ow + x) * 4 + ch] == want;
          }
      CHECK(same);
    }
}

static void test_ranges_and_params() {
  const FrameRange clip{0, 99}, io{10, 20}, custom{95, 120};
  FrameRange r = shot_range(RangeMode::WholeClip, clip, io, custom, 5);
  CHECK(r.first == 0 && r.last == 99);
  r = shot_range(RangeMode::InOut, clip, io, custom, 5);
  CHECK(r.first == 5 && r.last == 25 && r.count() == 21);
  r = shot_range(RangeMode::Custom, clip, io, custom, 3);
  CHECK(r.first == 92 && r.last == 99 && r.contains(99) && !r.contains(100));
  Params a, b;
  CHECK(a.signature() == b.signature());
  b.seed = 1;
  CHECK(a.signature() != b.signature());
  b = a;
  b.scale = 4;  // scale is not output-relevant for inpainting
  CHECK(a.signature() == b.signature());
  b.task = "upscale";
  CHECK(a.signature() != b.signature());
  msgpack::sbuffer buf;
  Packer pk(buf);
  b.steps = 3;
  b.pack(pk);
  msgpack::object_handle oh = msgpack::unpack(buf.data(), buf.size());
  const msgpack::object* task = map_find(oh.get(), "task");
  const msgpack::object* steps = map_find(oh.get(), "steps");
  CHECK(task && std::string(task->via.str.ptr, task->via.str.size) == "upscale");
  CHECK(steps && steps->via.u64 == 3);
  CHECK(!map_find(oh.get(), "strength") && !map_find(oh.get(), "propagate"));
  CHECK(map_find(oh.get(), "scale"));
  ShotStatus st{"running", 4, 10, ""};
  CHECK(std::fabs(eta_seconds(st, 0, 8.0) - 12.0) < 1e-9);  // 2 s a frame, 6 frames left
  CHECK(eta_seconds(st, 4, 8.0) < 0);
  CHECK(describe(st, 12.0) == "running: frame 5 of 10, ETA 12 s");
  CHECK(describe({"finished", 10, 10, ""}) == "done (10 frames)");
  CHECK(describe({"error", 3, 10, "model missing"}) == "error: model missing");
}

static void test_timeout_and_abort() {
  zmq::context_t ctx;
  zmq::socket_t router(ctx, zmq::socket_type::router);  // accepts, never answers
  router.set(zmq::sockopt::linger, 0);
  router.bind("tcp://127.0.0.1:*");
  const std::string address = router.get(zmq::sockopt::last_endpoint);
  Timeouts t;
  t.reply_s = 0.3;
  t.liveness_s = 0.3;
  Client c(address, t);
  auto start = std::chrono::steady_clock::now();
  std::string code;
  try {
    c.request("hello", {});
  } catch (const Error& e) {
    code = e.code;
    CHECK(std::string(e.what()).find("warpdiff serve") != std::string::npos);
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(code == "unreachable" && s >= 0.3 && s < 2.0);
  // A long wait: heartbeats go unanswered -> unreachable after liveness_s, not compute_s.
  start = std::chrono::steady_clock::now();
  code.clear();
  try {
    c.request("get_frame", {}, {}, {}, true);
  } catch (const Error& e) {
    code = e.code;
  }
  s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(code == "unreachable" && s < 3.0);
  // Abort: returns within a polling slice.
  t.reply_s = 30;
  Client slow(address, t);
  std::atomic<bool> flag{false};
  std::thread setter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    flag = true;
  });
  start = std::chrono::steady_clock::now();
  bool aborted = false;
  try {
    slow.request("hello", {}, {}, [&] { return flag.load(); });
  } catch (const Aborted&) {
    aborted = true;
  }
  setter.join();
  s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(aborted && s < 1.0);
  // Nobody listening at all: unreachable within reply_s.
  Timeouts quick;
  quick.reply_s = 0.2;
  Client nobody("tcp://127.0.0.1:1", quick);
  code.clear();
  try {
    nobody.request("hello", {});
  } catch (const Error& e) {
    code = e.code;
  }
  CHECK(code == "unreachable");
}

// Frames per upload batch: the parameter's count, fewer when they would pass kBatchBytes,
// at least one however large a frame is.
static void test_frames_per_batch() {
  ShotLayout hd;  // 1920x1080 RGBA float: 33.2 MB, just under 32 MiB
  hd.height = 1080, hd.width = 1920, hd.channels = 4, hd.dtype = "float32";
  CHECK(frames_per_batch(hd, 4) == 1);
  ShotLayout hd8 = hd;
  hd8.dtype = "uint8";  // 8.3 MB: four fit
  CHECK(frames_per_batch(hd8, 4) == 4 && frames_per_batch(hd8, 8) == 4 && frames_per_batch(hd8, 2) == 2);
  hd8.channels = 3, hd8.matte = MatteMode::Masks;  // RGB bytes + a float matte: 14.5 MB each
  CHECK(frames_per_batch(hd8, 4) == 2);
  ShotLayout uhd = hd;
  uhd.height = 2160, uhd.width = 3840;  // larger than the cap alone: still one
  CHECK(frames_per_batch(uhd, 4) == 1);
  ShotLayout tiny = hd;
  tiny.height = tiny.width = 32;
  CHECK(frames_per_batch(tiny, 4) == 4 && frames_per_batch(tiny, 0) == 1 && frames_per_batch(tiny, 500) == 64);
}

int main() {
  test_frames_per_batch();
  test_pack_float_bottom_up_offset_bounds();
  test_pack_negative_rowbytes_u8_u16();
  test_reused_buffer_equals_fresh();
  test_unpack_float_rgba_rows();
  test_pool_reuse_and_bound();
  test_mattes();
  test_unpack_and_copy();
  test_ranges_and_params();
  test_timeout_and_abort();
  if (failures) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("core tests: all passed\n");
  return 0;
}
