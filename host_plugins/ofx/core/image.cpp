#include "image.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace wd {
namespace {

const std::uint8_t* row_ptr(const HostImage& im, int y) {
  return static_cast<const std::uint8_t*>(im.data) + (y - im.bounds.y1) * im.row_bytes;
}
std::uint8_t* row_ptr(HostImage& im, int y) {
  return static_cast<std::uint8_t*>(im.data) + (y - im.bounds.y1) * im.row_bytes;
}

float read(const HostImage& im, const std::uint8_t* row, int x, int ch) {
  const std::size_t i = static_cast<std::size_t>(x - im.bounds.x1) * im.components + ch;
  switch (im.depth) {
    case Depth::U8: return row[i] / 255.f;
    case Depth::U16: return reinterpret_cast<const std::uint16_t*>(row)[i] / 65535.f;
    case Depth::F32: return reinterpret_cast<const float*>(row)[i];
  }
  return 0.f;
}

void write(HostImage& im, std::uint8_t* row, int x, int ch, float v) {
  const std::size_t i = static_cast<std::size_t>(x - im.bounds.x1) * im.components + ch;
  switch (im.depth) {
    case Depth::U8:
      row[i] = static_cast<std::uint8_t>(std::clamp(v, 0.f, 1.f) * 255.f + 0.5f);
      break;
    case Depth::U16:
      reinterpret_cast<std::uint16_t*>(row)[i] =
          static_cast<std::uint16_t>(std::clamp(v, 0.f, 1.f) * 65535.f + 0.5f);
      break;
    case Depth::F32: reinterpret_cast<float*>(row)[i] = v; break;
  }
}

bool inside(const Rect& r, int x, int y) { return x >= r.x1 && x < r.x2 && y >= r.y1 && y < r.y2; }

void check(const HostImage& im, const char* what) {
  if (!im.data) throw std::invalid_argument(std::string(what) + ": no pixel data");
  if (im.components != 1 && im.components != 3 && im.components != 4)
    throw std::invalid_argument(std::string(what) + ": components must be 1, 3 or 4");
  if (im.bounds.empty()) throw std::invalid_argument(std::string(what) + ": empty bounds");
  const std::ptrdiff_t need =
      static_cast<std::ptrdiff_t>(pixel_bytes(im.depth, im.components)) * im.bounds.width();
  if (std::abs(im.row_bytes) < need)
    throw std::invalid_argument(std::string(what) + ": row bytes smaller than a row");
}

// n float RGB pixels -> RGBA with alpha 1; returns the end of the output. With SSE2 each
// pixel is one 16-byte load (its RGB and the next pixel's R) and one store with lane 3 set to
// 1 (streamed past the cache when the row is aligned: the frame is larger than the cache and
// the host reads it later); the row's last pixel is copied alone (no read past the frame).
float* rgb_to_rgba(const float* s, float* o, int n) {
  int x = 0;
#if defined(__SSE2__)
  const __m128 rgb = _mm_castsi128_ps(_mm_set_epi32(0, -1, -1, -1));
  const __m128 alpha = _mm_set_ps(1.f, 0.f, 0.f, 0.f);
  if ((reinterpret_cast<std::uintptr_t>(o) & 15) == 0) {
    for (; x + 1 < n; ++x, s += 3, o += 4)
      _mm_stream_ps(o, _mm_or_ps(_mm_and_ps(_mm_loadu_ps(s), rgb), alpha));
    _mm_sfence();
  } else {
    for (; x + 1 < n; ++x, s += 3, o += 4)
      _mm_storeu_ps(o, _mm_or_ps(_mm_and_ps(_mm_loadu_ps(s), rgb), alpha));
  }
#endif
  for (; x < n; ++x, s += 3, o += 4) {
    o[0] = s[0];
    o[1] = s[1];
    o[2] = s[2];
    o[3] = 1.f;
  }
  return o;
}

}  // namespace

const char* dtype_name(Depth d) {
  return d == Depth::U8 ? "uint8" : d == Depth::U16 ? "uint16" : "float32";
}

std::size_t pixel_bytes(Depth d, int components) {
  return static_cast<std::size_t>(components) * (d == Depth::U8 ? 1 : d == Depth::U16 ? 2 : 4);
}

PackedPool::PackedPool(std::size_t keep) : state_(std::make_shared<State>()) {
  state_->keep = keep;
}

std::shared_ptr<Packed> PackedPool::get() {
  std::unique_ptr<Packed> p;
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    if (!state_->idle.empty()) {
      p = std::move(state_->idle.back());
      state_->idle.pop_back();
    } else {
      ++state_->allocated;
    }
  }
  if (!p) p = std::make_unique<Packed>();
  std::shared_ptr<State> state = state_;  // the pool may be gone when ZeroMQ lets go
  return std::shared_ptr<Packed>(p.release(), [state](Packed* q) {
    std::unique_ptr<Packed> owned(q);
    std::lock_guard<std::mutex> lock(state->mutex);
    if (state->idle.size() < state->keep) state->idle.push_back(std::move(owned));
  });
}

std::size_t PackedPool::idle() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->idle.size();
}

std::size_t PackedPool::allocated() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->allocated;
}

Packed pack_frame(const HostImage& im, const Rect& window, int channels, bool invert_alpha) {
  Packed p;
  pack_frame_into(im, window, channels, invert_alpha, p);
  return p;
}

void pack_frame_into(const HostImage& im, const Rect& window, int channels, bool invert_alpha,
                     Packed& p) {
  check(im, "frame");
  if (channels != 3 && channels != 4) throw std::invalid_argument("channels must be 3 or 4");
  if (im.components == 1) throw std::invalid_argument("frame: an alpha-only image has no RGB");
  if (window.empty()) throw std::invalid_argument("frame: empty window");
  p.dtype = dtype_name(im.depth);
  p.h = window.height(), p.w = window.width(), p.c = channels;
  const std::size_t item = p.itemsize();
  p.bytes.resize(static_cast<std::size_t>(p.h) * p.w * p.c * item);  // not zeroed
  const int copy_c = std::min(channels, im.components);
  const Rect clip{std::max(window.x1, im.bounds.x1), std::max(window.y1, im.bounds.y1),
                  std::min(window.x2, im.bounds.x2), std::min(window.y2, im.bounds.y2)};
  // Pixels outside the image, and alpha of an RGB image, are 0: zero the buffer first only
  // when some are (a reused buffer holds the previous frame).
  if (!(clip == window) || copy_c < channels) std::memset(p.bytes.data(), 0, p.bytes.size());
  const std::size_t px_in = im.components * item, px_out = channels * item, px_copy = copy_c * item;
  for (int y = clip.y1; y < clip.y2; ++y) {
    const std::uint8_t* src = row_ptr(im, y) + static_cast<std::size_t>(clip.x1 - im.bounds.x1) * px_in;
    std::uint8_t* dst = p.bytes.data() + (static_cast<std::size_t>(window.y2 - 1 - y) * p.w +
                                          (clip.x1 - window.x1)) * px_out;
    if (px_copy == px_in && px_copy == px_out) {
      std::memcpy(dst, src, static_cast<std::size_t>(clip.width()) * px_out);
    } else if (px_copy == 12) {  // float RGBA -> RGB (a fixed size: the compiler inlines it)
      for (int x = 0; x < clip.width(); ++x) std::memcpy(dst + x * px_out, src + x * px_in, 12);
    } else {
      for (int x = 0; x < clip.width(); ++x) std::memcpy(dst + x * px_out, src + x * px_in, px_copy);
    }
    if (invert_alpha && channels == 4) {
      for (int x = 0; x < clip.width(); ++x) {
        std::uint8_t* a = dst + (x * 4 + 3) * item;
        if (im.depth == Depth::U8) *a = static_cast<std::uint8_t>(255 - *a);
        else if (im.depth == Depth::U16) {
          std::uint16_t v;
          std::memcpy(&v, a, 2);
          v = static_cast<std::uint16_t>(65535 - v);
          std::memcpy(a, &v, 2);
        } else {
          float v;
          std::memcpy(&v, a, 4);
          v = 1.f - v;
          std::memcpy(a, &v, 4);
        }
      }
    }
  }
  if (invert_alpha && channels == 4) {  // pixels outside the image: alpha 0 -> inverted 1
    const float one = 1.f;
    for (int y = window.y1; y < window.y2; ++y)
      for (int x = window.x1; x < window.x2; ++x) {
        if (inside(clip, x, y)) continue;
        std::uint8_t* a = p.bytes.data() +
                          ((static_cast<std::size_t>(window.y2 - 1 - y) * p.w + (x - window.x1)) * 4 + 3) * item;
        if (im.depth == Depth::U8) *a = 255;
        else if (im.depth == Depth::U16) { const std::uint16_t v = 65535; std::memcpy(a, &v, 2); }
        else std::memcpy(a, &one, 4);
      }
  }
}

Packed pack_matte(const HostImage& im, const Rect& window, MatteChannel channel, bool invert) {
  Packed p;
  pack_matte_into(im, window, channel, invert, p);
  return p;
}

void pack_matte_into(const HostImage& im, const Rect& window, MatteChannel channel, bool invert,
                     Packed& p) {
  check(im, "matte");
  if (window.empty()) throw std::invalid_argument("matte: empty window");
  p.dtype = "float32";
  p.h = window.height(), p.w = window.width(), p.c = 1;
  p.bytes.resize(static_cast<std::size_t>(p.h) * p.w * 4);  // every pixel is written below
  auto* out = reinterpret_cast<float*>(p.bytes.data());
  const int nc = im.components;
  for (int y = window.y1; y < window.y2; ++y) {
    const bool row_in = y >= im.bounds.y1 && y < im.bounds.y2;
    const std::uint8_t* row = row_in ? row_ptr(im, y) : nullptr;
    float* o = out + static_cast<std::size_t>(window.y2 - 1 - y) * p.w;
    for (int x = window.x1; x < window.x2; ++x) {
      float v = 0.f;
      if (row && x >= im.bounds.x1 && x < im.bounds.x2) {
        if (nc == 1) v = read(im, row, x, 0);
        else if (channel == MatteChannel::Alpha) v = nc == 4 ? read(im, row, x, 3) : 1.f;
        else if (channel == MatteChannel::Luminance)
          v = 0.2126f * read(im, row, x, 0) + 0.7152f * read(im, row, x, 1) +
              0.0722f * read(im, row, x, 2);
        else v = read(im, row, x, static_cast<int>(channel) - 1);
      }
      v = std::clamp(v, 0.f, 1.f);
      o[x - window.x1] = invert ? 1.f - v : v;
    }
  }
}

void unpack_into(const float* src, int h, int w, int c, const Rect& source_rect, HostImage& dst,
                 const Rect& render_window) {
  check(dst, "output");
  if (c != 1 && c != 3 && c != 4) throw std::invalid_argument("result: channels must be 1, 3 or 4");
  if (source_rect.width() != w || source_rect.height() != h)
    throw std::invalid_argument("result: its size differs from the output's region");
  const Rect win{std::max(render_window.x1, dst.bounds.x1), std::max(render_window.y1, dst.bounds.y1),
                 std::min(render_window.x2, dst.bounds.x2), std::min(render_window.y2, dst.bounds.y2)};
  if (dst.depth == Depth::F32 && dst.components == 4 && (c == 3 || c == 4)) {
    // The common case (float RGBA hosts: Nuke, Resolve): straight row loops.
    for (int y = win.y1; y < win.y2; ++y) {
      float* out = reinterpret_cast<float*>(row_ptr(dst, y)) + (win.x1 - dst.bounds.x1) * 4;
      const bool have_row = y >= source_rect.y1 && y < source_rect.y2;
      const int xa = std::max(win.x1, source_rect.x1), xb = std::min(win.x2, source_rect.x2);
      if (!have_row || xa >= xb) {
        std::memset(out, 0, static_cast<std::size_t>(win.width()) * 16);
        continue;
      }
      std::memset(out, 0, static_cast<std::size_t>(xa - win.x1) * 16);
      const float* s = src + (static_cast<std::size_t>(source_rect.y2 - 1 - y) * w +
                              (xa - source_rect.x1)) * c;
      float* o = out + (xa - win.x1) * 4;
      if (c == 4) {
        std::memcpy(o, s, static_cast<std::size_t>(xb - xa) * 16);
        o += (xb - xa) * 4;
      } else {
        o = rgb_to_rgba(s, o, xb - xa);
      }
      std::memset(o, 0, static_cast<std::size_t>(win.x2 - xb) * 16);
    }
    return;
  }
  for (int y = win.y1; y < win.y2; ++y) {
    std::uint8_t* row = row_ptr(dst, y);
    const bool have_row = y >= source_rect.y1 && y < source_rect.y2;
    for (int x = win.x1; x < win.x2; ++x) {
      float px[4] = {0.f, 0.f, 0.f, 0.f};
      if (have_row && x >= source_rect.x1 && x < source_rect.x2) {
        const float* s = src + (static_cast<std::size_t>(source_rect.y2 - 1 - y) * w +
                                (x - source_rect.x1)) * c;
        if (c == 1) { px[3] = s[0]; }
        else {
          px[0] = s[0]; px[1] = s[1]; px[2] = s[2];
          px[3] = c == 4 ? s[3] : 1.f;
        }
      }
      if (dst.components == 1) write(dst, row, x, 0, px[3]);
      else for (int ch = 0; ch < dst.components; ++ch) write(dst, row, x, ch, px[ch]);
    }
  }
}

static int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

void copy_image(const HostImage& src, HostImage& dst, const Rect& window, int factor) {
  check(src, "source");
  check(dst, "output");
  if (factor < 1) throw std::invalid_argument("copy: factor must be >= 1");
  const Rect win{std::max(window.x1, dst.bounds.x1), std::max(window.y1, dst.bounds.y1),
                 std::min(window.x2, dst.bounds.x2), std::min(window.y2, dst.bounds.y2)};
  for (int y = win.y1; y < win.y2; ++y) {
    std::uint8_t* out = row_ptr(dst, y);
    const int sy = floor_div(y, factor);
    const bool have_row = sy >= src.bounds.y1 && sy < src.bounds.y2;
    const std::uint8_t* in = have_row ? row_ptr(src, sy) : nullptr;
    for (int xo = win.x1; xo < win.x2; ++xo) {
      const int x = floor_div(xo, factor);
      const bool have = in && x >= src.bounds.x1 && x < src.bounds.x2;
      for (int ch = 0; ch < dst.components; ++ch) {
        float v = 0.f;
        if (have) {
          if (src.components == dst.components) v = read(src, in, x, ch);
          else if (dst.components == 1) v = src.components == 4 ? read(src, in, x, 3) : 1.f;
          else if (src.components == 1) v = ch == 3 ? read(src, in, x, 0) : 0.f;
          else v = ch < 3 ? read(src, in, x, ch) : 1.f;
        }
        write(dst, out, xo, ch, v);
      }
    }
  }
}

}  // namespace wd
