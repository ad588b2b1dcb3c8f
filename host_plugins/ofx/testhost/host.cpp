// A small OpenFX host for tests: loads a bundle from the standard search path (or
// OFX_PLUGIN_PATH), provides the property, image-effect, parameter, memory, multithread and
// message suites backed by maps, serves frames from a raw float32 file, and drives the whole
// action sequence (load .. unload), rendering in a shuffled order from two threads. It counts
// every image it hands out and every release, and prints a JSON report on stdout.
// `--resolve` reproduces DaVinci Resolve's quirks (host name, no persistent messages, NULL
// images for extra clips, a thumbnail render at a reduced render scale).
#include <dlfcn.h>
#include <dirent.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "ofx_abi.h"

namespace {

// -- property sets ----------------------------------------------------------------------------
struct Value {
  std::vector<std::string> s;
  std::vector<int> i;
  std::vector<double> d;
  std::vector<void*> p;
};

}  // namespace

struct OfxPropertySetStruct {
  std::recursive_mutex m;
  std::map<std::string, Value> props;
  void set_s(const std::string& k, std::vector<std::string> v) { props[k].s = std::move(v); }
  void set_i(const std::string& k, std::vector<int> v) { props[k].i = std::move(v); }
  void set_d(const std::string& k, std::vector<double> v) { props[k].d = std::move(v); }
  void set_p(const std::string& k, void* v) { props[k].p = {v}; }
  std::string s(const std::string& k, const std::string& fb = "") {
    std::lock_guard<std::recursive_mutex> l(m);
    auto it = props.find(k);
    return it == props.end() || it->second.s.empty() ? fb : it->second.s[0];
  }
  std::vector<double> d(const std::string& k) {
    std::lock_guard<std::recursive_mutex> l(m);
    auto it = props.find(k);
    return it == props.end() ? std::vector<double>{} : it->second.d;
  }
  int i(const std::string& k, int fb = 0) {
    std::lock_guard<std::recursive_mutex> l(m);
    auto it = props.find(k);
    return it == props.end() || it->second.i.empty() ? fb : it->second.i[0];
  }
};
using Props = OfxPropertySetStruct;

namespace {

template <class T>
std::vector<T>& slot(Value& v);
template <> std::vector<std::string>& slot(Value& v) { return v.s; }
template <> std::vector<int>& slot(Value& v) { return v.i; }
template <> std::vector<double>& slot(Value& v) { return v.d; }
template <> std::vector<void*>& slot(Value& v) { return v.p; }

template <class T, class In>
OfxStatus prop_set(OfxPropertySetHandle h, const char* name, int index, In value) {
  if (!h || !name || index < 0) return kOfxStatErrBadHandle;
  std::lock_guard<std::recursive_mutex> l(h->m);
  auto& vec = slot<T>(h->props[name]);
  if (static_cast<std::size_t>(index) >= vec.size()) vec.resize(index + 1);
  vec[index] = T(value);
  return kOfxStatOK;
}
template <class T, class Out>
OfxStatus prop_get(OfxPropertySetHandle h, const char* name, int index, Out* value) {
  if (!h || !name || !value) return kOfxStatErrBadHandle;
  std::lock_guard<std::recursive_mutex> l(h->m);
  auto it = h->props.find(name);
  if (it == h->props.end()) return kOfxStatErrUnknown;
  auto& vec = slot<T>(it->second);
  if (index < 0 || static_cast<std::size_t>(index) >= vec.size()) return kOfxStatErrBadIndex;
  if constexpr (std::is_same_v<T, std::string>) *value = const_cast<char*>(vec[index].c_str());
  else *value = vec[index];
  return kOfxStatOK;
}

OfxStatus pSetPointer(OfxPropertySetHandle h, const char* n, int i, void* v) { return prop_set<void*>(h, n, i, v); }
OfxStatus pSetString(OfxPropertySetHandle h, const char* n, int i, const char* v) { return v ? prop_set<std::string>(h, n, i, v) : kOfxStatErrValue; }
OfxStatus pSetDouble(OfxPropertySetHandle h, const char* n, int i, double v) { return prop_set<double>(h, n, i, v); }
OfxStatus pSetInt(OfxPropertySetHandle h, const char* n, int i, int v) { return prop_set<int>(h, n, i, v); }
OfxStatus pSetPointerN(OfxPropertySetHandle h, const char* n, int c, void* const* v) { for (int i = 0; i < c; ++i) prop_set<void*>(h, n, i, v[i]); return kOfxStatOK; }
OfxStatus pSetStringN(OfxPropertySetHandle h, const char* n, int c, const char* const* v) { for (int i = 0; i < c; ++i) prop_set<std::string>(h, n, i, v[i]); return kOfxStatOK; }
OfxStatus pSetDoubleN(OfxPropertySetHandle h, const char* n, int c, const double* v) { for (int i = 0; i < c; ++i) prop_set<double>(h, n, i, v[i]); return kOfxStatOK; }
OfxStatus pSetIntN(OfxPropertySetHandle h, const char* n, int c, const int* v) { for (int i = 0; i < c; ++i) prop_set<int>(h, n, i, v[i]); return kOfxStatOK; }
OfxStatus pGetPointer(OfxPropertySetHandle h, const char* n, int i, void** v) { return prop_get<void*>(h, n, i, v); }
OfxStatus pGetString(OfxPropertySetHandle h, const char* n, int i, char** v) { return prop_get<std::string>(h, n, i, v); }
OfxStatus pGetDouble(OfxPropertySetHandle h, const char* n, int i, double* v) { return prop_get<double>(h, n, i, v); }
OfxStatus pGetInt(OfxPropertySetHandle h, const char* n, int i, int* v) { return prop_get<int>(h, n, i, v); }
OfxStatus pGetPointerN(OfxPropertySetHandle h, const char* n, int c, void** v) { for (int i = 0; i < c; ++i) if (OfxStatus s = prop_get<void*>(h, n, i, v + i)) return s; return kOfxStatOK; }
OfxStatus pGetStringN(OfxPropertySetHandle h, const char* n, int c, char** v) { for (int i = 0; i < c; ++i) if (OfxStatus s = prop_get<std::string>(h, n, i, v + i)) return s; return kOfxStatOK; }
OfxStatus pGetDoubleN(OfxPropertySetHandle h, const char* n, int c, double* v) { for (int i = 0; i < c; ++i) if (OfxStatus s = prop_get<double>(h, n, i, v + i)) return s; return kOfxStatOK; }
OfxStatus pGetIntN(OfxPropertySetHandle h, const char* n, int c, int* v) { for (int i = 0; i < c; ++i) if (OfxStatus s = prop_get<int>(h, n, i, v + i)) return s; return kOfxStatOK; }
OfxStatus pReset(OfxPropertySetHandle h, const char* n) { std::lock_guard<std::recursive_mutex> l(h->m); h->props.erase(n); return kOfxStatOK; }
OfxStatus pGetDimension(OfxPropertySetHandle h, const char* n, int* c) {
  std::lock_guard<std::recursive_mutex> l(h->m);
  auto it = h->props.find(n);
  if (it == h->props.end()) return kOfxStatErrUnknown;
  const Value& v = it->second;
  *c = static_cast<int>(std::max({v.s.size(), v.i.size(), v.d.size(), v.p.size()}));
  return kOfxStatOK;
}
const OfxPropertySuiteV1 kPropSuite = {pSetPointer, pSetString, pSetDouble, pSetInt, pSetPointerN, pSetStringN, pSetDoubleN, pSetIntN, pGetPointer, pGetString, pGetDouble, pGetInt, pGetPointerN, pGetStringN, pGetDoubleN, pGetIntN, pReset, pGetDimension};

// -- options ------------------------------------------------------------------------------------
struct Options {
  std::string plugin_id = "org.warpdiff.WarpedDiffusion";
  std::string context = kOfxImageEffectContextFilter;
  std::string input, mask, output;
  int n = 0, h = 0, w = 0;
  std::string depth = kOfxBitDepthFloat;
  std::vector<std::pair<std::string, std::string>> params;
  bool process = false, resolve = false, negative_rowbytes = false, no_render = false;
  int threads = 2;
  double abort_after = -1;
  int repeat = -1;
  std::vector<int> frames;
  unsigned seed = 1;
} opt;

// -- clips, params, effects ---------------------------------------------------------------------
struct Param {
  std::string type, name;
  Props props;
  std::mutex m;
  double num = 0;
  std::string str;
};

}  // namespace

struct OfxParamStruct : Param {};
struct OfxParamSetStruct {
  Props props;
  std::vector<std::string> order;
  std::map<std::string, std::unique_ptr<OfxParamStruct>> params;
};
struct OfxImageClipStruct {
  std::string name;
  Props props;
};
struct OfxImageEffectStruct {
  Props props;
  OfxParamSetStruct params;
  std::map<std::string, std::unique_ptr<OfxImageClipStruct>> clips;
  std::atomic<bool> abort{false};
  std::mutex render_lock;  // the plugin declares InstanceSafe: one render at a time
  std::string persistent;
  std::vector<std::string> messages;
  std::mutex msg_mutex;
};

namespace {

std::atomic<long> gFetched{0}, gReleased{0};
std::vector<float> gInput, gMask;  // [n, h, w, 4] and [n, h, w, 1], rows top first
std::mutex gImagesMutex;
std::set<Props*> gLiveImages;
thread_local struct RenderTarget {
  void* data = nullptr;
  int bounds[4] = {0, 0, 0, 0};
  long row_bytes = 0;
  double time = -1;
} tRender;
thread_local double tScale = 1.0;

int bytes_per(const std::string& depth) {
  return depth == kOfxBitDepthByte ? 1 : depth == kOfxBitDepthShort ? 2 : 4;
}

void put(void* row, int x, int c, int nc, const std::string& depth, float v) {
  const std::size_t i = static_cast<std::size_t>(x) * nc + c;
  if (depth == kOfxBitDepthByte)
    static_cast<uint8_t*>(row)[i] = static_cast<uint8_t>(std::lround(std::clamp(v, 0.f, 1.f) * 255.f));
  else if (depth == kOfxBitDepthShort)
    static_cast<uint16_t*>(row)[i] = static_cast<uint16_t>(std::lround(std::clamp(v, 0.f, 1.f) * 65535.f));
  else static_cast<float*>(row)[i] = v;
}
float get(const void* row, int x, int c, int nc, const std::string& depth) {
  const std::size_t i = static_cast<std::size_t>(x) * nc + c;
  if (depth == kOfxBitDepthByte) return static_cast<const uint8_t*>(row)[i] / 255.f;
  if (depth == kOfxBitDepthShort) return static_cast<const uint16_t*>(row)[i] / 65535.f;
  return static_cast<const float*>(row)[i];
}

struct Buffer {  // an image allocation with optional negative row bytes
  std::vector<uint8_t> bytes;
  void* data = nullptr;  // row y1
  long row_bytes = 0;
};
Buffer make_buffer(int w, int h, int nc, const std::string& depth) {
  Buffer b;
  const long rb = static_cast<long>(w) * nc * bytes_per(depth) + 16;  // padded rows
  b.bytes.assign(static_cast<std::size_t>(rb) * h, 0);
  if (opt.negative_rowbytes) {
    b.data = b.bytes.data() + static_cast<std::size_t>(rb) * (h - 1);
    b.row_bytes = -rb;
  } else {
    b.data = b.bytes.data();
    b.row_bytes = rb;
  }
  return b;
}
void* row_of(void* data, long rb, int y) { return static_cast<uint8_t*>(data) + rb * y; }

std::map<Props*, std::shared_ptr<Buffer>> gBuffers;
// Released images' buffers, reused for later fetches of the same size (a host serves frames
// from its image cache, not from memory allocated per fetch). gImagesMutex held.
std::vector<std::shared_ptr<Buffer>> gSpare;
constexpr std::size_t kSpareBuffers = 4;

std::shared_ptr<Buffer> image_buffer(int w, int h, int nc) {
  const long rb = static_cast<long>(w) * nc * bytes_per(opt.depth) + 16;
  const std::size_t size = static_cast<std::size_t>(rb) * h;
  {
    std::lock_guard<std::mutex> l(gImagesMutex);
    for (auto it = gSpare.begin(); it != gSpare.end(); ++it)
      if ((*it)->bytes.size() == size && std::labs((*it)->row_bytes) == rb) {
        std::shared_ptr<Buffer> b = std::move(*it);
        gSpare.erase(it);
        return b;  // every pixel is written again by the fetch
      }
  }
  return std::make_shared<Buffer>(make_buffer(w, h, nc, opt.depth));
}

Props* new_image(void* data, const int bounds[4], long rb, int nc, const std::string& depth) {
  auto* p = new Props();
  p->set_p(kOfxImagePropData, data);
  p->set_i(kOfxImagePropBounds, {bounds[0], bounds[1], bounds[2], bounds[3]});
  p->set_i(kOfxImagePropRowBytes, {static_cast<int>(rb)});
  p->set_s(kOfxImageEffectPropPixelDepth, {depth});
  p->set_s(kOfxImageEffectPropComponents,
           {nc == 4 ? kOfxImageComponentRGBA : nc == 3 ? kOfxImageComponentRGB : kOfxImageComponentAlpha});
  p->set_d(kOfxImageEffectPropRenderScale, {tScale, tScale});
  std::lock_guard<std::mutex> l(gImagesMutex);
  gLiveImages.insert(p);
  ++gFetched;
  return p;
}

// -- image effect suite -------------------------------------------------------------------------
OfxStatus eGetPropertySet(OfxImageEffectHandle e, OfxPropertySetHandle* p) { if (!e) return kOfxStatErrBadHandle; *p = &e->props; return kOfxStatOK; }
OfxStatus eGetParamSet(OfxImageEffectHandle e, OfxParamSetHandle* p) { if (!e) return kOfxStatErrBadHandle; *p = &e->params; return kOfxStatOK; }
OfxStatus eClipDefine(OfxImageEffectHandle e, const char* name, OfxPropertySetHandle* p) {
  auto& c = e->clips[name];
  c = std::make_unique<OfxImageClipStruct>();
  c->name = name;
  *p = &c->props;
  return kOfxStatOK;
}
OfxStatus eClipGetHandle(OfxImageEffectHandle e, const char* name, OfxImageClipHandle* c, OfxPropertySetHandle* p) {
  auto it = e->clips.find(name);
  if (it == e->clips.end()) return kOfxStatErrUnknown;
  *c = it->second.get();
  if (p) *p = &it->second->props;
  return kOfxStatOK;
}
OfxStatus eClipGetPropertySet(OfxImageClipHandle c, OfxPropertySetHandle* p) { *p = &c->props; return kOfxStatOK; }

OfxStatus eClipGetImage(OfxImageClipHandle clip, OfxTime t, const OfxRectD*, OfxPropertySetHandle* out) {
  *out = nullptr;
  if (clip->name == kOfxImageEffectOutputClipName) {
    if (!tRender.data || std::fabs(t - tRender.time) > 1e-9) return kOfxStatFailed;
    *out = new_image(tRender.data, tRender.bounds, tRender.row_bytes, 4, opt.depth);
    return kOfxStatOK;
  }
  const int f = static_cast<int>(std::lround(t));
  if (f < 0 || f >= opt.n || std::fabs(t - f) > 1e-9) return kOfxStatFailed;
  const bool is_mask = clip->name == "Mask";
  if (is_mask && (opt.resolve || gMask.empty())) return kOfxStatFailed;  // Resolve: NULL image
  const int step = tScale < 1.0 ? static_cast<int>(std::lround(1.0 / tScale)) : 1;
  const int w = opt.w / step, h = opt.h / step, nc = is_mask ? 1 : 4;
  std::shared_ptr<Buffer> buf = image_buffer(w, h, nc);
  const bool is_float = opt.depth == kOfxBitDepthFloat;
  for (int y = 0; y < h; ++y) {  // y up: row y holds file row h-1-y
    void* row = row_of(buf->data, buf->row_bytes, y);
    const int r = (h - 1 - y) * step;
    if (is_float && step == 1) {
      const float* from = (is_mask ? gMask.data() : gInput.data()) +
                          (static_cast<std::size_t>(f) * opt.h + r) * opt.w * nc;
      std::memcpy(row, from, static_cast<std::size_t>(w) * nc * 4);
      continue;
    }
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < nc; ++c) {
        const std::size_t i = ((static_cast<std::size_t>(f) * opt.h + r) * opt.w + x * step) * nc + c;
        put(row, x, c, nc, opt.depth, is_mask ? gMask[i] : gInput[i]);
      }
  }
  const int bounds[4] = {0, 0, w, h};
  Props* p = new_image(buf->data, bounds, buf->row_bytes, nc, opt.depth);
  {
    std::lock_guard<std::mutex> l(gImagesMutex);
    gBuffers[p] = buf;
  }
  *out = p;
  return kOfxStatOK;
}
OfxStatus eClipReleaseImage(OfxPropertySetHandle img) {
  {
    std::lock_guard<std::mutex> l(gImagesMutex);
    if (!gLiveImages.erase(img)) return kOfxStatErrBadHandle;
    auto it = gBuffers.find(img);
    if (it != gBuffers.end()) {
      if (gSpare.size() < kSpareBuffers) gSpare.push_back(std::move(it->second));
      gBuffers.erase(it);
    }
  }
  ++gReleased;
  delete img;
  return kOfxStatOK;
}
OfxStatus eClipGetRoD(OfxImageClipHandle, OfxTime, OfxRectD* r) {
  *r = {0, 0, static_cast<double>(opt.w), static_cast<double>(opt.h)};
  return kOfxStatOK;
}
int eAbort(OfxImageEffectHandle e) { return e->abort.load() ? 1 : 0; }
OfxStatus eMemAlloc(OfxImageEffectHandle, size_t n, OfxImageMemoryHandle* m) { *m = reinterpret_cast<OfxImageMemoryHandle>(std::malloc(n)); return *m ? kOfxStatOK : kOfxStatErrMemory; }
OfxStatus eMemFree(OfxImageMemoryHandle m) { std::free(m); return kOfxStatOK; }
OfxStatus eMemLock(OfxImageMemoryHandle m, void** p) { *p = m; return kOfxStatOK; }
OfxStatus eMemUnlock(OfxImageMemoryHandle) { return kOfxStatOK; }
const OfxImageEffectSuiteV1 kEffectSuite = {eGetPropertySet, eGetParamSet, eClipDefine, eClipGetHandle, eClipGetPropertySet, eClipGetImage, eClipReleaseImage, eClipGetRoD, eAbort, eMemAlloc, eMemFree, eMemLock, eMemUnlock};

// -- parameter suite ------------------------------------------------------------------------------
OfxStatus paDefine(OfxParamSetHandle s, const char* type, const char* name, OfxPropertySetHandle* p) {
  if (s->params.count(name)) return kOfxStatErrExists;
  auto prm = std::make_unique<OfxParamStruct>();
  prm->type = type;
  prm->name = name;
  prm->props.set_s(kOfxPropName, {name});
  prm->props.set_s(kOfxPropType, {type});
  if (p) *p = &prm->props;
  s->order.push_back(name);
  s->params[name] = std::move(prm);
  return kOfxStatOK;
}
OfxStatus paGetHandle(OfxParamSetHandle s, const char* name, OfxParamHandle* h, OfxPropertySetHandle* p) {
  auto it = s->params.find(name);
  if (it == s->params.end()) return kOfxStatErrUnknown;
  *h = it->second.get();
  if (p) *p = &it->second->props;
  return kOfxStatOK;
}
OfxStatus paSetGetPropertySet(OfxParamSetHandle s, OfxPropertySetHandle* p) { *p = &s->props; return kOfxStatOK; }
OfxStatus paGetPropertySet(OfxParamHandle h, OfxPropertySetHandle* p) { *p = &h->props; return kOfxStatOK; }
OfxStatus get_value(OfxParamHandle h, va_list ap) {
  std::lock_guard<std::mutex> l(h->m);
  if (h->type == kOfxParamTypeDouble) *va_arg(ap, double*) = h->num;
  else if (h->type == kOfxParamTypeString) *va_arg(ap, char**) = const_cast<char*>(h->str.c_str());
  else if (h->type == kOfxParamTypePushButton) return kOfxStatErrBadHandle;
  else *va_arg(ap, int*) = static_cast<int>(h->num);
  return kOfxStatOK;
}
OfxStatus set_value(OfxParamHandle h, va_list ap) {
  std::lock_guard<std::mutex> l(h->m);
  if (h->type == kOfxParamTypeDouble) h->num = va_arg(ap, double);
  else if (h->type == kOfxParamTypeString) h->str = va_arg(ap, const char*);
  else if (h->type == kOfxParamTypePushButton) return kOfxStatErrBadHandle;
  else h->num = va_arg(ap, int);
  return kOfxStatOK;
}
OfxStatus paGetValue(OfxParamHandle h, ...) { va_list ap; va_start(ap, h); OfxStatus s = get_value(h, ap); va_end(ap); return s; }
OfxStatus paGetValueAtTime(OfxParamHandle h, OfxTime, ...) { return kOfxStatErrUnsupported; (void)h; }
OfxStatus paGetDerivative(OfxParamHandle, OfxTime, ...) { return kOfxStatErrUnsupported; }
OfxStatus paGetIntegral(OfxParamHandle, OfxTime, OfxTime, ...) { return kOfxStatErrUnsupported; }
OfxStatus paSetValue(OfxParamHandle h, ...) { va_list ap; va_start(ap, h); OfxStatus s = set_value(h, ap); va_end(ap); return s; }
OfxStatus paSetValueAtTime(OfxParamHandle, OfxTime, ...) { return kOfxStatErrUnsupported; }
OfxStatus paGetNumKeys(OfxParamHandle, unsigned int* n) { *n = 0; return kOfxStatOK; }
OfxStatus paGetKeyTime(OfxParamHandle, unsigned int, OfxTime*) { return kOfxStatErrBadIndex; }
OfxStatus paGetKeyIndex(OfxParamHandle, OfxTime, int, int*) { return kOfxStatFailed; }
OfxStatus paDeleteKey(OfxParamHandle, OfxTime) { return kOfxStatErrBadIndex; }
OfxStatus paDeleteAllKeys(OfxParamHandle) { return kOfxStatOK; }
OfxStatus paCopy(OfxParamHandle, OfxParamHandle, OfxTime, const OfxRangeD*) { return kOfxStatErrUnsupported; }
OfxStatus paEditBegin(OfxParamSetHandle, const char*) { return kOfxStatOK; }
OfxStatus paEditEnd(OfxParamSetHandle) { return kOfxStatOK; }
const OfxParameterSuiteV1 kParamSuite = {paDefine, paGetHandle, paSetGetPropertySet, paGetPropertySet, paGetValue, paGetValueAtTime, paGetDerivative, paGetIntegral, paSetValue, paSetValueAtTime, paGetNumKeys, paGetKeyTime, paGetKeyIndex, paDeleteKey, paDeleteAllKeys, paCopy, paEditBegin, paEditEnd};

// -- memory, multithread, message suites ----------------------------------------------------------
OfxStatus mAlloc(void*, size_t n, void** p) { *p = std::malloc(n); return *p ? kOfxStatOK : kOfxStatErrMemory; }
OfxStatus mFree(void* p) { std::free(p); return kOfxStatOK; }
const OfxMemorySuiteV1 kMemorySuite = {mAlloc, mFree};

thread_local unsigned tThreadIndex = 0;
thread_local bool tSpawned = false;
OfxStatus tMulti(OfxThreadFunctionV1 fn, unsigned n, void* arg) {
  std::vector<std::thread> ts;
  for (unsigned i = 0; i < n; ++i)
    ts.emplace_back([=] { tThreadIndex = i; tSpawned = true; fn(i, n, arg); });
  for (auto& t : ts) t.join();
  return kOfxStatOK;
}
OfxStatus tNumCPUs(unsigned* n) { *n = std::max(1u, std::thread::hardware_concurrency()); return kOfxStatOK; }
OfxStatus tIndex(unsigned* i) { *i = tThreadIndex; return kOfxStatOK; }
int tIsSpawned() { return tSpawned ? 1 : 0; }
OfxStatus tMutexCreate(OfxMutexHandle* m, int) { *m = reinterpret_cast<OfxMutexHandle>(new std::recursive_mutex()); return kOfxStatOK; }
OfxStatus tMutexDestroy(const OfxMutexHandle m) { delete reinterpret_cast<std::recursive_mutex*>(m); return kOfxStatOK; }
OfxStatus tMutexLock(const OfxMutexHandle m) { reinterpret_cast<std::recursive_mutex*>(m)->lock(); return kOfxStatOK; }
OfxStatus tMutexUnLock(const OfxMutexHandle m) { reinterpret_cast<std::recursive_mutex*>(m)->unlock(); return kOfxStatOK; }
OfxStatus tMutexTryLock(const OfxMutexHandle m) { return reinterpret_cast<std::recursive_mutex*>(m)->try_lock() ? kOfxStatOK : kOfxStatFailed; }
const OfxMultiThreadSuiteV1 kThreadSuite = {tMulti, tNumCPUs, tIndex, tIsSpawned, tMutexCreate, tMutexDestroy, tMutexLock, tMutexUnLock, tMutexTryLock};

std::string vformat(const char* fmt, va_list ap) {
  char buf[4096];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  return buf;
}
OfxStatus msgMessage(void* h, const char* type, const char*, const char* fmt, ...) {
  va_list ap; va_start(ap, fmt); std::string s = vformat(fmt, ap); va_end(ap);
  if (auto* e = static_cast<OfxImageEffectStruct*>(h)) {
    std::lock_guard<std::mutex> l(e->msg_mutex);
    e->messages.push_back(std::string(type) + ": " + s);
  }
  return kOfxStatOK;
}
OfxStatus msgPersistent(void* h, const char*, const char*, const char* fmt, ...) {
  va_list ap; va_start(ap, fmt); std::string s = vformat(fmt, ap); va_end(ap);
  auto* e = static_cast<OfxImageEffectStruct*>(h);
  if (!e) return kOfxStatErrBadHandle;
  std::lock_guard<std::mutex> l(e->msg_mutex);
  e->persistent = s;
  return kOfxStatOK;
}
OfxStatus msgClear(void* h) {
  auto* e = static_cast<OfxImageEffectStruct*>(h);
  std::lock_guard<std::mutex> l(e->msg_mutex);
  e->persistent.clear();
  return kOfxStatOK;
}
const OfxMessageSuiteV1 kMessageV1 = {msgMessage};
const OfxMessageSuiteV2 kMessageV2 = {msgMessage, msgPersistent, msgClear};

Props gHostProps;
const void* fetchSuite(OfxPropertySetHandle, const char* name, int version) {
  const std::string n = name;
  if (n == kOfxPropertySuite && version == 1) return &kPropSuite;
  if (n == kOfxImageEffectSuite && version == 1) return &kEffectSuite;
  if (n == kOfxParameterSuite && version == 1) return &kParamSuite;
  if (n == kOfxMemorySuite && version == 1) return &kMemorySuite;
  if (n == kOfxMultiThreadSuite && version == 1) return &kThreadSuite;
  if (n == kOfxMessageSuite && version == 1) return &kMessageV1;
  if (n == kOfxMessageSuite && version == 2 && !opt.resolve) return &kMessageV2;
  return nullptr;
}
OfxHost gHost = {&gHostProps, fetchSuite};

// -- JSON report ----------------------------------------------------------------------------------
std::string esc(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\', o += c;
    else if (static_cast<unsigned char>(c) < 0x20) o += ' ';
    else o += c;
  }
  return o + "\"";
}

// -- plugin discovery -----------------------------------------------------------------------------
std::vector<std::string> find_binaries() {
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("OFX_PLUGIN_PATH")) {
    std::stringstream ss(env);
    for (std::string d; std::getline(ss, d, ':');) if (!d.empty()) dirs.push_back(d);
  }
  dirs.push_back("/usr/OFX/Plugins");
  std::vector<std::string> found;
  for (const std::string& d : dirs) {
    DIR* dir = opendir(d.c_str());
    if (!dir) continue;
    while (dirent* ent = readdir(dir)) {
      const std::string name = ent->d_name;
      const std::string suffix = ".ofx.bundle";
      if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix)) continue;
      const std::string stem = name.substr(0, name.size() - suffix.size());
      const std::string bin = d + "/" + name + "/Contents/Linux-x86-64/" + stem + ".ofx";
      if (FILE* f = std::fopen(bin.c_str(), "rb")) { std::fclose(f); found.push_back(bin); }
    }
    closedir(dir);
  }
  return found;
}

std::vector<float> read_raw(const std::string& path, std::size_t count) {
  std::vector<float> v(count);
  std::ifstream f(path, std::ios::binary);
  if (!f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(count * 4))) {
    std::fprintf(stderr, "cannot read %zu floats from %s\n", count, path.c_str());
    std::exit(2);
  }
  return v;
}

void usage() {
  std::fprintf(stderr,
               "ofx_testhost --input F --size N,H,W [--mask F] [--output F] [--context filter|general]\n"
               "  [--depth float|short|byte] [--param name=value]... [--process] [--resolve]\n"
               "  [--threads K] [--frames a,b,c] [--no-render] [--abort-after S] [--repeat T]\n"
               "  [--negative-rowbytes]\n"
               "  [--seed S]   (the bundle is found through OFX_PLUGIN_PATH or /usr/OFX/Plugins)\n");
  std::exit(2);
}

void parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string { if (i + 1 >= argc) usage(); return argv[++i]; };
    if (a == "--input") opt.input = next();
    else if (a == "--mask") opt.mask = next();
    else if (a == "--output") opt.output = next();
    else if (a == "--size") { if (std::sscanf(next().c_str(), "%d,%d,%d", &opt.n, &opt.h, &opt.w) != 3) usage(); }
    else if (a == "--context") opt.context = next() == "general" ? kOfxImageEffectContextGeneral : kOfxImageEffectContextFilter;
    else if (a == "--depth") { const std::string d = next(); opt.depth = d == "byte" ? kOfxBitDepthByte : d == "short" ? kOfxBitDepthShort : kOfxBitDepthFloat; }
    else if (a == "--param") { const std::string kv = next(); const auto eq = kv.find('='); if (eq == std::string::npos) usage(); opt.params.emplace_back(kv.substr(0, eq), kv.substr(eq + 1)); }
    else if (a == "--process") opt.process = true;
    else if (a == "--no-render") opt.no_render = true;
    else if (a == "--resolve") opt.resolve = true;
    else if (a == "--negative-rowbytes") opt.negative_rowbytes = true;
    else if (a == "--threads") opt.threads = std::max(1, std::atoi(next().c_str()));
    else if (a == "--abort-after") opt.abort_after = std::atof(next().c_str());
    else if (a == "--repeat") opt.repeat = std::atoi(next().c_str());
    else if (a == "--seed") opt.seed = static_cast<unsigned>(std::atoi(next().c_str()));
    else if (a == "--frames") { std::stringstream ss(next()); for (std::string t; std::getline(ss, t, ',');) opt.frames.push_back(std::atoi(t.c_str())); }
    else usage();
  }
  if (opt.input.empty() || opt.n < 1 || opt.h < 1 || opt.w < 1) usage();
}

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace

int main(int argc, char** argv) {
  parse(argc, argv);
  gInput = read_raw(opt.input, static_cast<std::size_t>(opt.n) * opt.h * opt.w * 4);
  if (!opt.mask.empty()) gMask = read_raw(opt.mask, static_cast<std::size_t>(opt.n) * opt.h * opt.w);
  gHostProps.set_s(kOfxPropName, {opt.resolve ? "DaVinciResolve" : "org.warpdiff.testhost"});
  gHostProps.set_s(kOfxPropLabel, {opt.resolve ? "DaVinci Resolve" : "warpdiff test host"});
  gHostProps.set_i(kOfxImageEffectHostPropIsBackground, {0});

  std::vector<std::string> bins = find_binaries();
  OfxPlugin* plugin = nullptr;
  void* lib = nullptr;
  for (const std::string& bin : bins) {
    lib = dlopen(bin.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) { std::fprintf(stderr, "dlopen %s: %s\n", bin.c_str(), dlerror()); continue; }
    auto count = reinterpret_cast<OfxGetNumberOfPluginsFn>(dlsym(lib, "OfxGetNumberOfPlugins"));
    auto get = reinterpret_cast<OfxGetPluginFn>(dlsym(lib, "OfxGetPlugin"));
    for (int i = 0; count && get && i < count(); ++i)
      if (get(i) && opt.plugin_id == get(i)->pluginIdentifier) plugin = get(i);
    if (plugin) break;
    dlclose(lib);
    lib = nullptr;
  }
  if (!plugin) { std::fprintf(stderr, "plugin %s not found on the OFX search path\n", opt.plugin_id.c_str()); return 3; }
  std::vector<std::string> log;
  auto call = [&](const char* action, void* handle, Props* in, Props* out) {
    const OfxStatus s = plugin->mainEntry(action, handle, in, out);
    log.push_back(std::string(action) + "=" + std::to_string(s));
    return s;
  };
  plugin->setHost(&gHost);
  if (call(kOfxActionLoad, nullptr, nullptr, nullptr) != kOfxStatOK) { std::fprintf(stderr, "load failed\n"); return 4; }

  OfxImageEffectStruct descriptor;
  call(kOfxActionDescribe, &descriptor, nullptr, nullptr);
  OfxImageEffectStruct context_desc;
  Props ctx_in;
  ctx_in.set_s(kOfxImageEffectPropContext, {opt.context});
  context_desc.props.set_s(kOfxImageEffectPropContext, {opt.context});
  if (call(kOfxImageEffectActionDescribeInContext, &context_desc, &ctx_in, nullptr) != kOfxStatOK) return 5;

  // The instance: clips and params copied from the context's descriptor.
  auto inst = std::make_unique<OfxImageEffectStruct>();
  inst->props.set_s(kOfxImageEffectPropContext, {opt.context});
  inst->props.set_d(kOfxImageEffectPropFrameRange, {0.0, static_cast<double>(opt.n - 1)});
  inst->props.set_d("OfxImageEffectPropProjectSize", {static_cast<double>(opt.w), static_cast<double>(opt.h)});
  for (auto& [name, clip] : context_desc.clips) {
    auto c = std::make_unique<OfxImageClipStruct>();
    c->name = name;
    c->props.props = clip->props.props;
    c->props.set_i(kOfxImageClipPropConnected, {name != "Mask" || !gMask.empty() || opt.resolve ? 1 : 0});
    c->props.set_d(kOfxImageEffectPropFrameRange, {0.0, static_cast<double>(opt.n - 1)});
    c->props.set_s(kOfxImageEffectPropPixelDepth, {opt.depth});
    c->props.set_s(kOfxImageEffectPropComponents, {name == "Mask" ? kOfxImageComponentAlpha : kOfxImageComponentRGBA});
    inst->clips[name] = std::move(c);
  }
  for (const std::string& name : context_desc.params.order) {
    OfxParamStruct& d = *context_desc.params.params[name];
    OfxParamHandle h = nullptr;
    Props* p = nullptr;
    paDefine(&inst->params, d.type.c_str(), name.c_str(), &p);
    paGetHandle(&inst->params, name.c_str(), &h, nullptr);
    h->props.props = d.props.props;
    if (d.type == kOfxParamTypeDouble) h->num = d.props.d(kOfxParamPropDefault).empty() ? 0 : d.props.d(kOfxParamPropDefault)[0];
    else if (d.type == kOfxParamTypeString) h->str = d.props.s(kOfxParamPropDefault);
    else h->num = d.props.i(kOfxParamPropDefault);
  }
  if (call(kOfxActionCreateInstance, inst.get(), nullptr, nullptr) != kOfxStatOK) return 6;

  auto changed = [&](const std::string& name) {
    Props in;
    in.set_s(kOfxPropType, {kOfxTypeParameter});
    in.set_s(kOfxPropName, {name});
    in.set_s(kOfxPropChangeReason, {kOfxChangeUserEdited});
    in.set_d(kOfxPropTime, {0.0});
    in.set_d(kOfxImageEffectPropRenderScale, {1.0, 1.0});
    call(kOfxActionBeginInstanceChanged, inst.get(), nullptr, nullptr);
    const OfxStatus s = call(kOfxActionInstanceChanged, inst.get(), &in, nullptr);
    call(kOfxActionEndInstanceChanged, inst.get(), nullptr, nullptr);
    return s;
  };
  for (auto& [name, value] : opt.params) {
    auto it = inst->params.params.find(name);
    if (it == inst->params.params.end()) { std::fprintf(stderr, "no parameter %s\n", name.c_str()); return 7; }
    if (it->second->type == kOfxParamTypeString) it->second->str = value;
    else it->second->num = std::atof(value.c_str());
    changed(name);
  }

  Props prefs;
  call(kOfxImageEffectActionGetClipPreferences, inst.get(), nullptr, &prefs);
  Props rod_in, rod_out;
  rod_in.set_d(kOfxPropTime, {0.0});
  rod_in.set_d(kOfxImageEffectPropRenderScale, {1.0, 1.0});
  double rod[4] = {0, 0, static_cast<double>(opt.w), static_cast<double>(opt.h)};
  if (call(kOfxImageEffectActionGetRegionOfDefinition, inst.get(), &rod_in, &rod_out) == kOfxStatOK)
    pGetDoubleN(&rod_out, kOfxImageEffectPropRegionOfDefinition, 4, rod);
  Props fn_in, fn_out;
  fn_in.set_d(kOfxPropTime, {static_cast<double>(opt.n / 2)});
  call(kOfxImageEffectActionGetFramesNeeded, inst.get(), &fn_in, &fn_out);
  std::vector<double> needed = fn_out.d("OfxImageClipPropFrameRange_Source");
  Props roi_in, roi_out;
  roi_in.set_d(kOfxPropTime, {0.0});
  roi_in.set_d(kOfxImageEffectPropRenderScale, {1.0, 1.0});
  roi_in.set_d("OfxImageEffectPropRegionOfInterest", {rod[0], rod[1], rod[2], rod[3]});
  call(kOfxImageEffectActionGetRegionsOfInterest, inst.get(), &roi_in, &roi_out);
  std::vector<double> roi = roi_out.d("OfxImageClipPropRoI_Source");
  Props id_in, id_out;
  id_in.set_d(kOfxPropTime, {0.0});
  id_in.set_s("OfxImageEffectPropFieldToRender", {"OfxImageFieldNone"});
  id_in.set_i(kOfxImageEffectPropRenderWindow, {0, 0, static_cast<int>(rod[2]), static_cast<int>(rod[3])});
  id_in.set_d(kOfxImageEffectPropRenderScale, {1.0, 1.0});
  const OfxStatus identity = call(kOfxImageEffectActionIsIdentity, inst.get(), &id_in, &id_out);

  OfxStatus process_status = kOfxStatOK;
  double process_s = 0;
  if (opt.process) {
    const auto p0 = Clock::now();
    process_status = changed("process");
    process_s = since(p0);
  }

  const int ow = static_cast<int>(std::lround(rod[2] - rod[0])), oh = static_cast<int>(std::lround(rod[3] - rod[1]));
  std::vector<float> result(static_cast<std::size_t>(opt.n) * oh * ow * 4, 0.f);
  struct Render { int frame; int status; double start, end; double scale; };
  std::vector<Render> renders;
  std::mutex renders_m;
  const auto t0 = Clock::now();
  auto render = [&](int f, double scale) {
    const int w = static_cast<int>(ow * scale), h = static_cast<int>(oh * scale);
    std::lock_guard<std::mutex> lock(inst->render_lock);  // InstanceSafe
    Buffer out = make_buffer(w, h, 4, opt.depth);
    tRender.data = out.data;
    tRender.bounds[0] = 0, tRender.bounds[1] = 0, tRender.bounds[2] = w, tRender.bounds[3] = h;
    tRender.row_bytes = out.row_bytes;
    tRender.time = f;
    tScale = scale;
    Props in;
    in.set_d(kOfxPropTime, {static_cast<double>(f)});
    in.set_s("OfxImageEffectPropFieldToRender", {"OfxImageFieldNone"});
    in.set_i(kOfxImageEffectPropRenderWindow, {0, 0, w, h});
    in.set_d(kOfxImageEffectPropRenderScale, {scale, scale});
    in.set_i("OfxImageEffectPropSequentialRenderStatus", {0});
    in.set_i("OfxImageEffectPropInteractiveRenderStatus", {0});
    const double start = since(t0);
    const OfxStatus s = plugin->mainEntry(kOfxImageEffectActionRender, inst.get(), &in, nullptr);
    const double end = since(t0);
    tRender = RenderTarget{};
    tScale = 1.0;
    if (s == kOfxStatOK && scale == 1.0 && opt.depth == kOfxBitDepthFloat)
      for (int y = 0; y < h; ++y)
        std::memcpy(&result[((static_cast<std::size_t>(f) * oh + (h - 1 - y)) * ow) * 4],
                    row_of(out.data, out.row_bytes, y), static_cast<std::size_t>(w) * 16);
    else if (s == kOfxStatOK && scale == 1.0)
      for (int y = 0; y < h; ++y) {
        const void* row = row_of(out.data, out.row_bytes, y);
        for (int x = 0; x < w; ++x)
          for (int c = 0; c < 4; ++c)
            result[((static_cast<std::size_t>(f) * oh + (h - 1 - y)) * ow + x) * 4 + c] = get(row, x, c, 4, opt.depth);
      }
    std::lock_guard<std::mutex> l(renders_m);
    renders.push_back({f, s, start, end, scale});
  };
  if (opt.resolve) render(0, 0.5);  // a media-pool thumbnail
  std::vector<int> frames = opt.frames;
  if (frames.empty()) for (int f = 0; f < opt.n; ++f) frames.push_back(f);
  if (opt.no_render) frames.clear();
  std::shuffle(frames.begin(), frames.end(), std::mt19937(opt.seed));
  Props seq;
  seq.set_d(kOfxImageEffectPropFrameRange, {0.0, static_cast<double>(opt.n - 1)});
  seq.set_d(kOfxImageEffectPropFrameStep, {1.0});
  seq.set_i("OfxPropIsInteractive", {0});
  seq.set_d(kOfxImageEffectPropRenderScale, {1.0, 1.0});
  call(kOfxImageEffectActionBeginSequenceRender, inst.get(), &seq, nullptr);
  double abort_at = -1;
  std::thread aborter;
  if (opt.abort_after >= 0)
    aborter = std::thread([&] {
      std::this_thread::sleep_for(std::chrono::duration<double>(opt.abort_after));
      abort_at = since(t0);
      inst->abort = true;
    });
  std::atomic<std::size_t> next{0};
  std::vector<std::thread> workers;
  for (int k = 0; k < opt.threads; ++k)
    workers.emplace_back([&] {
      for (std::size_t i; (i = next++) < frames.size();) render(frames[i], 1.0);
    });
  for (auto& t : workers) t.join();
  if (aborter.joinable()) aborter.join();
  inst->abort = false;
  std::vector<double> repeat_s;
  if (opt.repeat >= 0)
    for (int k = 0; k < 3; ++k) {
      render(opt.repeat, 1.0);
      repeat_s.push_back(renders.back().end - renders.back().start);
    }
  call(kOfxImageEffectActionEndSequenceRender, inst.get(), &seq, nullptr);
  changed("timeout");  // a parameter touched: the status line refreshes
  std::string status = inst->params.params["status"]->str;
  std::string shot = inst->params.params["shot"]->str;
  std::string persistent = inst->persistent;
  std::vector<std::string> messages = inst->messages;
  call(kOfxActionDestroyInstance, inst.get(), nullptr, nullptr);
  inst.reset();
  call(kOfxActionUnload, nullptr, nullptr, nullptr);
  dlclose(lib);

  if (!opt.output.empty()) {
    std::ofstream f(opt.output, std::ios::binary);
    f.write(reinterpret_cast<const char*>(result.data()), static_cast<std::streamsize>(result.size() * 4));
  }
  std::ostringstream js;
  js << "{\"plugin\": " << esc(opt.plugin_id) << ", \"fetched\": " << gFetched << ", \"released\": " << gReleased
     << ", \"rod\": [" << rod[0] << ", " << rod[1] << ", " << rod[2] << ", " << rod[3] << "]"
     << ", \"frames_needed\": [" << (needed.size() == 2 ? std::to_string(needed[0]) + ", " + std::to_string(needed[1]) : "") << "]"
     << ", \"roi\": [";
  for (std::size_t i = 0; i < roi.size(); ++i) js << (i ? ", " : "") << roi[i];
  js << "], \"identity\": " << identity << ", \"process\": " << process_status
     << ", \"process_s\": " << process_s
     << ", \"output_components\": " << esc(prefs.s("OfxImageClipPropComponents_Output"))
     << ", \"status\": " << esc(status) << ", \"shot\": " << esc(shot) << ", \"persistent\": " << esc(persistent)
     << ", \"abort_at\": " << abort_at << ", \"repeat_s\": [";
  for (std::size_t i = 0; i < repeat_s.size(); ++i) js << (i ? ", " : "") << repeat_s[i];
  js << "], \"messages\": [";
  for (std::size_t i = 0; i < messages.size(); ++i) js << (i ? ", " : "") << esc(messages[i]);
  js << "], \"actions\": [";
  for (std::size_t i = 0; i < log.size(); ++i) js << (i ? ", " : "") << esc(log[i]);
  js << "], \"renders\": [";
  for (std::size_t i = 0; i < renders.size(); ++i)
    js << (i ? ", " : "") << "{\"frame\": " << renders[i].frame << ", \"status\": " << renders[i].status
       << ", \"start\": " << renders[i].start << ", \"end\": " << renders[i].end << ", \"scale\": " << renders[i].scale << "}";
  js << "]}";
  std::printf("%s\n", js.str().c_str());
  return 0;
}
