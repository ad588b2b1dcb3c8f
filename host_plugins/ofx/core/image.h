// Host image rows <-> the protocol's binary parts. No OpenFX dependency: a host image is a
// pointer, its bounds, its row bytes (negative for top-down storage) and its pixel type.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

namespace wd {

enum class Depth { U8, U16, F32 };

struct Rect {  // [x1, x2) x [y1, y2), y up (OpenFX canonical/pixel coordinates)
  int x1 = 0, y1 = 0, x2 = 0, y2 = 0;
  int width() const { return x2 - x1; }
  int height() const { return y2 - y1; }
  bool empty() const { return x2 <= x1 || y2 <= y1; }
  bool operator==(const Rect& o) const {
    return x1 == o.x1 && y1 == o.y1 && x2 == o.x2 && y2 == o.y2;
  }
};

struct HostImage {
  void* data = nullptr;
  Rect bounds;
  std::ptrdiff_t row_bytes = 0;
  Depth depth = Depth::F32;
  int components = 4;  // 1 (alpha), 3 (RGB), 4 (RGBA)
};

// Bytes that a resize leaves uninitialised: a 33 MB frame buffer is written once by the
// packing, not zeroed first (which touched every page twice).
template <class T>
struct NoInitAllocator : std::allocator<T> {
  template <class U> struct rebind { using other = NoInitAllocator<U>; };
  NoInitAllocator() = default;
  template <class U> NoInitAllocator(const NoInitAllocator<U>&) noexcept {}
  template <class U> void construct(U* p) noexcept { ::new (static_cast<void*>(p)) U; }
  template <class U, class... A> void construct(U* p, A&&... a) {
    ::new (static_cast<void*>(p)) U(std::forward<A>(a)...);
  }
};
using Bytes = std::vector<std::uint8_t, NoInitAllocator<std::uint8_t>>;

// An image in the protocol's layout: [h, w, c] rows top first, channels last, little-endian.
struct Packed {
  std::string dtype;  // "uint8" | "uint16" | "float32"
  int h = 0, w = 0, c = 0;
  Bytes bytes;
  std::size_t itemsize() const { return dtype == "uint8" ? 1 : dtype == "uint16" ? 2 : 4; }
};

// Frame buffers reused across the frames of an upload: a buffer comes back when the last
// holder (ZeroMQ, once the message is on the wire, on its I/O thread) lets go, and the next
// frame is packed into it, so an upload allocates a few frames' memory once instead of a
// fresh 33 MB per frame (fresh memory is the slow part: page faults, and on VMs that hand
// memory back to the host, a host fault per page). At most `keep` idle buffers are kept; they
// are freed with the last holder of the pool or of a buffer, whichever goes last.
class PackedPool {
 public:
  explicit PackedPool(std::size_t keep);
  // A buffer for one image (its old contents and size are unspecified: pack into it).
  std::shared_ptr<Packed> get();
  std::size_t idle() const;       // buffers waiting in the pool
  std::size_t allocated() const;  // buffers made so far (each reuse saves one)

 private:
  struct State {
    mutable std::mutex mutex;
    std::vector<std::unique_ptr<Packed>> idle;
    std::size_t keep = 0, allocated = 0;
  };
  std::shared_ptr<State> state_;
};

enum class MatteChannel { Alpha, Red, Green, Blue, Luminance };

const char* dtype_name(Depth depth);
std::size_t pixel_bytes(Depth depth, int components);

// The pixels of `window` (a rectangle of the clip, usually its region of definition) in
// `image`'s own type, rows flipped to top first; pixels outside the image's bounds are 0.
// `channels` 3 drops alpha; 4 needs an RGBA image (or RGB: alpha 0). `invert_alpha` makes the
// alpha channel 1 - alpha (a matte painted the other way round).
Packed pack_frame(const HostImage& image, const Rect& window, int channels, bool invert_alpha);
// The same into `out` (its buffer reused: resized, never shrunk in capacity).
void pack_frame_into(const HostImage& image, const Rect& window, int channels, bool invert_alpha,
                     Packed& out);

// One channel of `image` (or its luminance) over `window` as a float32 [h, w, 1] matte in
// [0, 1]; 1 = region to fill (after `invert`). Outside the image's bounds: 0 (keep).
Packed pack_matte(const HostImage& image, const Rect& window, MatteChannel channel, bool invert);
void pack_matte_into(const HostImage& image, const Rect& window, MatteChannel channel, bool invert,
                     Packed& out);

// Writes a float32 [h, w, c] (c 3 or 4, rows top first) covering `source_rect` into the
// part of `dst` inside `render_window`: RGB from the source, alpha from it when c is 4 or 1.
// Throws std::invalid_argument when the source does not cover the render window.
void unpack_into(const float* source, int h, int w, int c, const Rect& source_rect,
                 HostImage& dst, const Rect& render_window);

// Copies `src` into `dst` over `window` (pass-through, any depths); with `factor` > 1 the
// output pixel (x, y) shows source pixel (floor(x / factor), floor(y / factor)).
void copy_image(const HostImage& src, HostImage& dst, const Rect& window, int factor = 1);

}  // namespace wd
