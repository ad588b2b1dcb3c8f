// Warped Diffusion as an OpenFX image effect: a thin layer over the core library (core/),
// which speaks server/PROTOCOL.md. Describe / describe-in-context / render are kept apart;
// every image fetched from the host is released by a guard on every path; no exception ever
// leaves OfxPluginMain.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "image.h"
#include "ofx_abi.h"
#include "shot.h"

namespace {

// -- capabilities and names -------------------------------------------------------------------
constexpr const char* kPluginId = "org.warpdiff.WarpedDiffusion";
constexpr unsigned kVersionMajor = 1, kVersionMinor = 0;
constexpr const char* kMaskClip = "Mask";
constexpr const char* kDefaultServer = "tcp://127.0.0.1:5557";

namespace P {  // parameter names (stable: hosts save projects by them)
constexpr const char* task = "task";
constexpr const char* scale = "scale";
constexpr const char* strength = "strength";
constexpr const char* steps = "steps";
constexpr const char* seed = "seed";
constexpr const char* guidance = "guidance";
constexpr const char* noise = "noise";
constexpr const char* propagate = "propagate";
constexpr const char* model = "model";
constexpr const char* server = "server";
constexpr const char* timeout = "timeout";
constexpr const char* range = "range";
constexpr const char* first = "firstFrame";
constexpr const char* last = "lastFrame";
constexpr const char* handles = "handles";
constexpr const char* batch = "uploadBatch";
constexpr const char* matte = "matte";
constexpr const char* channel = "matteChannel";
constexpr const char* invert = "invertMatte";
constexpr const char* autoProcess = "autoProcess";
constexpr const char* process = "process";
constexpr const char* cancel = "cancel";
constexpr const char* status = "status";
constexpr const char* shot = "shot";
}  // namespace P

const char* const kTasks[] = {"inpaint", "upscale"};
const int kScales[] = {2, 4, 8};
const char* const kNoises[] = {"gp", "integral", "bilinear", "nearest", "iid"};

enum class HostKind { Generic, Resolve, Nuke, Natron };

// -- the host's suites ------------------------------------------------------------------------
OfxHost* gHost = nullptr;
const OfxPropertySuiteV1* gProp = nullptr;
const OfxImageEffectSuiteV1* gEffect = nullptr;
const OfxParameterSuiteV1* gParam = nullptr;
const OfxMessageSuiteV1* gMsg1 = nullptr;
const OfxMessageSuiteV2* gMsg2 = nullptr;  // persistent messages (Resolve may lack it)
HostKind gHostKind = HostKind::Generic;
std::string gHostName;

struct Failure : std::runtime_error {  // a missing host feature or a bad host answer
  using std::runtime_error::runtime_error;
};

void ok(OfxStatus s, const char* what) {
  if (s != kOfxStatOK) throw Failure(std::string("the host refused ") + what);
}

std::string prop_string(OfxPropertySetHandle props, const char* name, int index = 0) {
  char* value = nullptr;
  if (!props || gProp->propGetString(props, name, index, &value) != kOfxStatOK || !value)
    return {};
  return value;
}
int prop_int(OfxPropertySetHandle props, const char* name, int fallback = 0, int index = 0) {
  int value = fallback;
  if (!props || gProp->propGetInt(props, name, index, &value) != kOfxStatOK) return fallback;
  return value;
}
double prop_double(OfxPropertySetHandle props, const char* name, double fallback = 0, int i = 0) {
  double value = fallback;
  if (!props || gProp->propGetDouble(props, name, i, &value) != kOfxStatOK) return fallback;
  return value;
}

// -- an effect instance ---------------------------------------------------------------------
struct Instance {
  OfxImageEffectHandle handle = nullptr;
  std::string context;
  OfxImageClipHandle source = nullptr, output = nullptr, mask = nullptr;
  OfxParamSetHandle params = nullptr;

  std::mutex mutex;  // everything below
  std::unique_ptr<wd::Session> session;
  std::string session_address;
  double session_timeout = 0;
  std::string key, key_signature;
  wd::FrameRange key_range;
  wd::Rect key_window;
  std::chrono::steady_clock::time_point processed_at;  // for the status line's ETA
  int done_at_process = 0;
};

Instance* instance_of(OfxImageEffectHandle effect) {
  OfxPropertySetHandle props = nullptr;
  if (gEffect->getPropertySet(effect, &props) != kOfxStatOK) return nullptr;
  void* data = nullptr;
  gProp->propGetPointer(props, kOfxPropInstanceData, 0, &data);
  return static_cast<Instance*>(data);
}

OfxParamHandle param(const Instance& inst, const char* name) {
  OfxParamHandle h = nullptr;
  ok(gParam->paramGetHandle(inst.params, name, &h, nullptr), name);
  return h;
}
int get_int(const Instance& inst, const char* name) {
  int v = 0;
  ok(gParam->paramGetValue(param(inst, name), &v), name);
  return v;
}
double get_double(const Instance& inst, const char* name) {
  double v = 0;
  ok(gParam->paramGetValue(param(inst, name), &v), name);
  return v;
}
std::string get_string(const Instance& inst, const char* name) {
  char* v = nullptr;
  ok(gParam->paramGetValue(param(inst, name), &v), name);
  return v ? v : "";
}
void set_string(const Instance& inst, const char* name, const std::string& value) {
  gParam->paramSetValue(param(inst, name), value.c_str());  // best effort: a status line
}

// -- messages -------------------------------------------------------------------------------
void persistent_error(const Instance& inst, const std::string& message) {
  std::fprintf(stderr, "Warped Diffusion: %s\n", message.c_str());
  if (gMsg2) gMsg2->setPersistentMessage(inst.handle, kOfxMessageError, "", "%s", message.c_str());
}
void clear_error(const Instance& inst) {
  if (gMsg2) gMsg2->clearPersistentMessage(inst.handle);
}

// -- images from the host, always released ------------------------------------------------------
class Image {
 public:
  Image(OfxImageClipHandle clip, OfxTime t) {
    if (clip && gEffect->clipGetImage(clip, t, nullptr, &props_) != kOfxStatOK) props_ = nullptr;
  }
  ~Image() {
    if (props_) gEffect->clipReleaseImage(props_);
  }
  Image(const Image&) = delete;
  Image& operator=(const Image&) = delete;
  bool valid() const { return props_ != nullptr; }

  wd::HostImage view() const {
    wd::HostImage im;
    gProp->propGetPointer(props_, kOfxImagePropData, 0, &im.data);
    int b[4] = {0, 0, 0, 0};
    gProp->propGetIntN(props_, kOfxImagePropBounds, 4, b);
    im.bounds = {b[0], b[1], b[2], b[3]};
    im.row_bytes = prop_int(props_, kOfxImagePropRowBytes);
    const std::string depth = prop_string(props_, kOfxImageEffectPropPixelDepth);
    const std::string comps = prop_string(props_, kOfxImageEffectPropComponents);
    if (depth == kOfxBitDepthByte) im.depth = wd::Depth::U8;
    else if (depth == kOfxBitDepthShort) im.depth = wd::Depth::U16;
    else if (depth == kOfxBitDepthFloat) im.depth = wd::Depth::F32;
    else throw Failure("pixel depth " + depth + " is not supported (use 8-bit, 16-bit or float)");
    if (comps == kOfxImageComponentRGBA) im.components = 4;
    else if (comps == kOfxImageComponentRGB) im.components = 3;
    else if (comps == kOfxImageComponentAlpha) im.components = 1;
    else throw Failure("components " + comps + " are not supported (use RGBA, RGB or alpha)");
    if (!im.data) throw Failure("the host gave an image without pixels");
    return im;
  }

 private:
  OfxPropertySetHandle props_ = nullptr;
};

// -- the shot's description from the parameters ----------------------------------------------
struct ShotConfig {
  wd::Params params;
  wd::FrameRange range;
  wd::MatteMode matte = wd::MatteMode::Alpha;
  wd::MatteChannel channel = wd::MatteChannel::Alpha;
  bool invert = false;
  std::string address;
  double timeout = 10;
  int batch = 4;
  std::string signature() const {
    return params.signature() + "|" + std::to_string(range.first) + ":" +
           std::to_string(range.last) + "|" + std::to_string(static_cast<int>(matte)) + "|" +
           std::to_string(static_cast<int>(channel)) + "|" + std::to_string(invert);
  }
};

wd::FrameRange clip_range(OfxImageClipHandle clip) {
  OfxPropertySetHandle props = nullptr;
  ok(gEffect->clipGetPropertySet(clip, &props), "the clip's properties");
  double r[2] = {0, 0};
  gProp->propGetDoubleN(props, kOfxImageEffectPropFrameRange, 2, r);
  return {static_cast<int>(std::lround(r[0])), static_cast<int>(std::lround(r[1]))};
}

bool use_mask_clip(const Instance& inst) {
  // Resolve reports every clip as connected and hands out black or NULL images for extra
  // clips: there the matte always comes from the source's alpha.
  return inst.mask && gHostKind != HostKind::Resolve && get_int(inst, P::matte) == 1;
}

ShotConfig read_config(const Instance& inst) {
  ShotConfig c;
  wd::Params& p = c.params;
  p.task = kTasks[std::clamp(get_int(inst, P::task), 0, 1)];
  p.scale = kScales[std::clamp(get_int(inst, P::scale), 0, 2)];
  p.strength = get_double(inst, P::strength);
  p.steps = get_int(inst, P::steps);
  p.seed = get_int(inst, P::seed);
  p.guidance = get_double(inst, P::guidance);
  p.noise = kNoises[std::clamp(get_int(inst, P::noise), 0, 4)];
  p.propagate = get_int(inst, P::propagate);
  p.model = get_string(inst, P::model);
  c.address = get_string(inst, P::server);
  if (c.address.empty()) c.address = kDefaultServer;
  c.timeout = get_double(inst, P::timeout);
  c.batch = std::max(1, get_int(inst, P::batch));
  const wd::FrameRange clip = clip_range(inst.source);
  OfxPropertySetHandle effect_props = nullptr;
  gEffect->getPropertySet(inst.handle, &effect_props);
  double io[2] = {static_cast<double>(clip.first), static_cast<double>(clip.last)};
  gProp->propGetDoubleN(effect_props, kOfxImageEffectPropFrameRange, 2, io);
  const wd::FrameRange in_out{static_cast<int>(std::lround(io[0])),
                              static_cast<int>(std::lround(io[1]))};
  const wd::FrameRange custom{get_int(inst, P::first), get_int(inst, P::last)};
  c.range = wd::shot_range(static_cast<wd::RangeMode>(std::clamp(get_int(inst, P::range), 0, 2)),
                           clip, in_out, custom, get_int(inst, P::handles));
  if (p.task == "upscale") c.matte = wd::MatteMode::None;
  else c.matte = use_mask_clip(inst) ? wd::MatteMode::Masks : wd::MatteMode::Alpha;
  c.channel = static_cast<wd::MatteChannel>(std::clamp(get_int(inst, P::channel), 0, 4));
  c.invert = get_int(inst, P::invert) != 0;
  return c;
}

wd::Rect source_window(const Instance& inst, OfxTime t) {
  OfxRectD rod{0, 0, 0, 0};
  ok(gEffect->clipGetRegionOfDefinition(inst.source, t, &rod), "the source's region");
  return {static_cast<int>(std::floor(rod.x1)), static_cast<int>(std::floor(rod.y1)),
          static_cast<int>(std::ceil(rod.x2)), static_cast<int>(std::ceil(rod.y2))};
}

wd::Session& session_for(Instance& inst, const ShotConfig& c) {  // inst.mutex held
  if (!inst.session || inst.session_address != c.address || inst.session_timeout != c.timeout) {
    wd::Timeouts t;
    t.reply_s = std::max(0.1, c.timeout);
    t.liveness_s = std::max(0.1, c.timeout);
    inst.session = std::make_unique<wd::Session>(c.address, t);
    inst.session_address = c.address;
    inst.session_timeout = c.timeout;
  }
  return *inst.session;
}

// Reads the range's frames (and mattes) through the host and uploads them in batches.
void process_shot(Instance& inst, const ShotConfig& c, const wd::AbortFn& abort) {
  if (c.range.count() < 1)
    throw wd::Error("bad_body", "the frame range is empty: check First/Last frame and the clip");
  wd::Session& session = session_for(inst, c);
  const wd::Rect window = source_window(inst, c.range.first);
  if (window.empty()) throw wd::Error("bad_body", "the source has an empty region of definition");
  wd::ShotLayout layout;
  layout.n_frames = c.range.count();
  layout.height = window.height();
  layout.width = window.width();
  layout.matte = c.matte;
  layout.channels = c.matte == wd::MatteMode::Alpha ? 4 : 3;
  {
    Image first(inst.source, c.range.first);
    if (!first.valid()) throw wd::Error("bad_body", "the host gave no source image");
    layout.dtype = wd::dtype_name(first.view().depth);
  }
  using Clock = std::chrono::steady_clock;
  Clock::duration fetching{}, packing{};  // WD_OFX_TIMING diagnostics
  auto frame = [&](int i, wd::Packed& out) {
    const auto t0 = Clock::now();
    Image img(inst.source, c.range.first + i);
    if (!img.valid())
      throw wd::Error("bad_body", "the host gave no source image at frame " +
                                      std::to_string(c.range.first + i));
    const wd::HostImage view = img.view();
    if (view.depth == wd::Depth::F32 ? layout.dtype != "float32" : layout.dtype != wd::dtype_name(view.depth))
      throw wd::Error("bad_body", "the source's bit depth changes inside the shot");
    const bool invert = c.matte == wd::MatteMode::Alpha && c.invert;
    const auto t1 = Clock::now();
    wd::pack_frame_into(view, window, layout.channels, invert, out);
    fetching += t1 - t0;
    packing += Clock::now() - t1;
  };
  auto matte = [&](int i, wd::Packed& out) {
    const auto t0 = Clock::now();
    Image img(inst.mask, c.range.first + i);
    if (!img.valid())
      throw wd::Error("bad_body",
                      "the Mask clip gave no image at frame " + std::to_string(c.range.first + i) +
                          ": connect a matte, or set Matte to 'Source alpha'");
    const wd::HostImage view = img.view();
    const auto t1 = Clock::now();
    wd::pack_matte_into(view, window, c.channel, c.invert, out);
    fetching += t1 - t0;
    packing += Clock::now() - t1;
  };
  const auto start = Clock::now();
  wd::UploadStats stats;
  const std::string key =
      session.upload(c.params, layout, frame, matte, abort, {}, c.batch, &stats);
  if (std::getenv("WD_OFX_TIMING")) {  // diagnostics: where an upload's time goes
    using ms = std::chrono::duration<double, std::milli>;
    const double total = ms(Clock::now() - start).count();
    const double fetch = ms(fetching).count(), pack = ms(packing).count();
    std::fprintf(stderr,
                 "warpdiff-ofx timing: upload %d frames %.1f ms: host fetch %.1f ms, pack %.1f "
                 "ms, rest (server, wire) %.1f ms; %zu buffers, %d frames a batch, at most %d "
                 "batches in flight (server's limit %d)\n",
                 layout.n_frames, total, fetch, pack, total - fetch - pack, stats.buffers,
                 stats.batch, stats.max_in_flight, stats.window);
  }
  inst.key = key;
  inst.processed_at = std::chrono::steady_clock::now();
  inst.done_at_process = session.status(key).done;  // frames from the cache: not in the ETA
  inst.key_signature = c.signature();
  inst.key_range = c.range;
  inst.key_window = window;
}

wd::AbortFn host_abort(const Instance& inst) {
  OfxImageEffectHandle h = inst.handle;
  return [h]() { return gEffect->abort(h) != 0; };
}

// -- actions ----------------------------------------------------------------------------------
OfxStatus render(Instance& inst, OfxPropertySetHandle in) {
  const OfxTime t = prop_double(in, kOfxPropTime);
  int w[4] = {0, 0, 0, 0};
  gProp->propGetIntN(in, kOfxImageEffectPropRenderWindow, 4, w);
  const wd::Rect window{w[0], w[1], w[2], w[3]};
  const double render_scale = prop_double(in, kOfxImageEffectPropRenderScale, 1.0);
  const ShotConfig c = read_config(inst);
  const int frame = static_cast<int>(std::lround(t));
  const int factor = c.params.task == "upscale" ? c.params.scale : 1;

  Image out(inst.output, t);
  if (!out.valid()) throw Failure("the host gave no output image");
  wd::HostImage dst = out.view();

  // Thumbnails and proxy renders (render scale != 1, Resolve's media pool) and frames outside
  // the shot: the source as it is (nearest-neighbour enlarged when upscaling).
  if (std::fabs(render_scale - 1.0) > 1e-9 || !c.range.contains(frame)) {
    Image src(inst.source, t);
    if (!src.valid()) throw Failure("the host gave no source image");
    wd::copy_image(src.view(), dst, window, factor);  // both are at the same render scale
    return kOfxStatOK;
  }
  std::lock_guard<std::mutex> lock(inst.mutex);
  const wd::AbortFn abort = host_abort(inst);
  if (inst.key.empty() || inst.key_signature != c.signature()) {
    if (get_int(inst, P::autoProcess) == 0)
      throw wd::Error("bad_body", "this shot is not processed yet: press 'Process shot'");
    process_shot(inst, c, abort);
  }
  wd::Session& session = session_for(inst, c);
  const wd::Rect rod = inst.key_window;
  const wd::Rect result_rect{rod.x1 * factor, rod.y1 * factor, rod.x2 * factor, rod.y2 * factor};
  const auto t0 = std::chrono::steady_clock::now();
  auto t1 = t0;
  session.get_frame(inst.key, frame - inst.key_range.first, abort,
                    [&](const wd::Reply::Image& im) {
                      t1 = std::chrono::steady_clock::now();
                      wd::unpack_into(reinterpret_cast<const float*>(im.data), im.h, im.w, im.c,
                                      result_rect, dst, window);
                    });
  if (std::getenv("WD_OFX_TIMING")) {  // diagnostics: where a render's time goes
    const auto t2 = std::chrono::steady_clock::now();
    std::fprintf(stderr, "warpdiff-ofx timing: get_frame %.2f ms, unpack %.2f ms\n",
                 std::chrono::duration<double, std::milli>(t1 - t0).count(),
                 std::chrono::duration<double, std::milli>(t2 - t1).count());
  }
  clear_error(inst);
  return kOfxStatOK;
}

void update_status(Instance& inst) {  // inst.mutex held
  if (inst.key.empty() || !inst.session) return;
  try {
    const wd::ShotStatus s = inst.session->status(inst.key);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                                         inst.processed_at).count();
    set_string(inst, P::status, wd::describe(s, wd::eta_seconds(s, inst.done_at_process, elapsed)));
  } catch (const wd::Error& e) {
    set_string(inst, P::status, std::string("error: ") + e.what());
  }
}

OfxStatus instance_changed(Instance& inst, OfxPropertySetHandle in) {
  if (prop_string(in, kOfxPropType) != kOfxTypeParameter) return kOfxStatReplyDefault;
  const std::string name = prop_string(in, kOfxPropName);
  if (name == P::status || name == P::shot) return kOfxStatOK;
  std::lock_guard<std::mutex> lock(inst.mutex);
  if (name == P::process) {
    const ShotConfig c = read_config(inst);
    set_string(inst, P::status, "uploading " + std::to_string(c.range.count()) + " frames");
    try {
      process_shot(inst, c, {});
    } catch (const std::exception& e) {
      set_string(inst, P::status, std::string("error: ") + e.what());
      throw;
    }
    set_string(inst, P::shot, inst.key);
    update_status(inst);
    clear_error(inst);
  } else if (name == P::cancel) {
    if (!inst.key.empty() && inst.session) {
      inst.session->cancel(inst.key);
      update_status(inst);
    }
  } else if (!inst.key.empty() && inst.key_signature != read_config(inst).signature()) {
    set_string(inst, P::status, "parameters changed: a new shot (press 'Process shot')");
  } else {
    update_status(inst);
  }
  return kOfxStatOK;
}

OfxStatus frames_needed(Instance& inst, OfxPropertySetHandle in, OfxPropertySetHandle out) {
  const OfxTime t = prop_double(in, kOfxPropTime);
  const ShotConfig c = read_config(inst);
  double r[2] = {t, t};
  if (c.range.contains(static_cast<int>(std::lround(t))))
    r[0] = c.range.first, r[1] = c.range.last;
  gProp->propSetDoubleN(out, kOfxImageClipPropFrameRangePrefix "Source", 2, r);
  if (inst.mask) gProp->propSetDoubleN(out, kOfxImageClipPropFrameRangePrefix "Mask", 2, r);
  return kOfxStatOK;
}

OfxStatus regions_of_interest(Instance& inst, OfxPropertySetHandle in, OfxPropertySetHandle out) {
  const OfxTime t = prop_double(in, kOfxPropTime);
  OfxRectD rod{0, 0, 0, 0};
  ok(gEffect->clipGetRegionOfDefinition(inst.source, t, &rod), "the source's region");
  const double roi[4] = {rod.x1, rod.y1, rod.x2, rod.y2};  // whole frames, always
  gProp->propSetDoubleN(out, kOfxImageClipPropRoIPrefix "Source", 4, roi);
  if (inst.mask) gProp->propSetDoubleN(out, kOfxImageClipPropRoIPrefix "Mask", 4, roi);
  return kOfxStatOK;
}

OfxStatus region_of_definition(Instance& inst, OfxPropertySetHandle in, OfxPropertySetHandle out) {
  if (kTasks[std::clamp(get_int(inst, P::task), 0, 1)] != std::string("upscale"))
    return kOfxStatReplyDefault;
  const double s = kScales[std::clamp(get_int(inst, P::scale), 0, 2)];
  OfxRectD rod{0, 0, 0, 0};
  ok(gEffect->clipGetRegionOfDefinition(inst.source, prop_double(in, kOfxPropTime), &rod),
     "the source's region");
  const double r[4] = {rod.x1 * s, rod.y1 * s, rod.x2 * s, rod.y2 * s};
  gProp->propSetDoubleN(out, kOfxImageEffectPropRegionOfDefinition, 4, r);
  return kOfxStatOK;
}

OfxStatus is_identity(Instance& inst, OfxPropertySetHandle in, OfxPropertySetHandle out) {
  const OfxTime t = prop_double(in, kOfxPropTime);
  const ShotConfig c = read_config(inst);
  if (c.params.task != "inpaint" || c.range.contains(static_cast<int>(std::lround(t))))
    return kOfxStatReplyDefault;
  gProp->propSetString(out, kOfxPropName, 0, kOfxImageEffectSimpleSourceClipName);
  gProp->propSetDouble(out, kOfxPropTime, 0, t);
  return kOfxStatOK;
}

OfxStatus clip_preferences(Instance& inst, OfxPropertySetHandle out) {
  gProp->propSetString(out, kOfxImageClipPropComponentsPrefix "Output", 0, kOfxImageComponentRGBA);
  if (inst.mask)
    gProp->propSetString(out, kOfxImageClipPropComponentsPrefix "Mask", 0,
                         kOfxImageComponentAlpha);
  gProp->propSetInt(out, kOfxImageEffectFrameVarying, 0, 1);
  return kOfxStatOK;
}

OfxStatus create_instance(OfxImageEffectHandle effect) {
  auto inst = std::make_unique<Instance>();
  inst->handle = effect;
  OfxPropertySetHandle props = nullptr;
  ok(gEffect->getPropertySet(effect, &props), "the effect's properties");
  inst->context = prop_string(props, kOfxImageEffectPropContext);
  ok(gEffect->getParamSet(effect, &inst->params), "the parameters");
  ok(gEffect->clipGetHandle(effect, kOfxImageEffectSimpleSourceClipName, &inst->source, nullptr),
     "the Source clip");
  ok(gEffect->clipGetHandle(effect, kOfxImageEffectOutputClipName, &inst->output, nullptr),
     "the Output clip");
  if (inst->context == kOfxImageEffectContextGeneral)
    if (gEffect->clipGetHandle(effect, kMaskClip, &inst->mask, nullptr) != kOfxStatOK)
      inst->mask = nullptr;
  ok(gProp->propSetPointer(props, kOfxPropInstanceData, 0, inst.get()), "instance data");
  inst.release();
  return kOfxStatOK;
}

OfxStatus destroy_instance(OfxImageEffectHandle effect) {
  delete instance_of(effect);
  OfxPropertySetHandle props = nullptr;
  if (gEffect->getPropertySet(effect, &props) == kOfxStatOK)
    gProp->propSetPointer(props, kOfxPropInstanceData, 0, nullptr);
  return kOfxStatOK;
}

// -- describe -------------------------------------------------------------------------------
OfxStatus describe(OfxImageEffectHandle effect) {
  OfxPropertySetHandle p = nullptr;
  ok(gEffect->getPropertySet(effect, &p), "the descriptor");
  gProp->propSetString(p, kOfxPropLabel, 0, "Warped Diffusion");
  gProp->propSetString(p, kOfxImageEffectPluginPropGrouping, 0, "Warped Diffusion");
  gProp->propSetString(p, kOfxPropPluginDescription, 0,
                       "Flicker-free object removal and upscaling by the local warpdiff server "
                       "(start it with: warpdiff serve).");
  gProp->propSetString(p, kOfxImageEffectPropSupportedContexts, 0, kOfxImageEffectContextFilter);
  gProp->propSetString(p, kOfxImageEffectPropSupportedContexts, 1, kOfxImageEffectContextGeneral);
  gProp->propSetString(p, kOfxImageEffectPropSupportedPixelDepths, 0, kOfxBitDepthFloat);
  gProp->propSetString(p, kOfxImageEffectPropSupportedPixelDepths, 1, kOfxBitDepthShort);
  gProp->propSetString(p, kOfxImageEffectPropSupportedPixelDepths, 2, kOfxBitDepthByte);
  gProp->propSetInt(p, kOfxImageEffectPluginPropSingleInstance, 0, 0);
  gProp->propSetString(p, kOfxImageEffectPluginRenderThreadSafety, 0,
                       kOfxImageEffectRenderInstanceSafe);
  gProp->propSetInt(p, kOfxImageEffectPluginPropHostFrameThreading, 0, 0);
  gProp->propSetInt(p, kOfxImageEffectPropTemporalClipAccess, 0, 1);
  gProp->propSetInt(p, kOfxImageEffectPropSupportsTiles, 0, 0);
  gProp->propSetInt(p, kOfxImageEffectPropSupportsMultiResolution, 0, 1);
  gProp->propSetInt(p, kOfxImageEffectPropSupportsMultipleClipDepths, 0, 0);
  return kOfxStatOK;
}

OfxPropertySetHandle define(OfxParamSetHandle set, const char* type, const char* name,
                            const char* label, const char* hint) {
  OfxPropertySetHandle p = nullptr;
  ok(gParam->paramDefine(set, type, name, &p), name);
  gProp->propSetString(p, kOfxPropLabel, 0, label);
  gProp->propSetString(p, kOfxParamPropHint, 0, hint);
  gProp->propSetInt(p, kOfxParamPropAnimates, 0, 0);
  return p;
}
void define_int(OfxParamSetHandle set, const char* name, const char* label, const char* hint,
                int def, int lo, int hi) {
  OfxPropertySetHandle p = define(set, kOfxParamTypeInteger, name, label, hint);
  gProp->propSetInt(p, kOfxParamPropDefault, 0, def);
  gProp->propSetInt(p, kOfxParamPropMin, 0, lo);
  gProp->propSetInt(p, kOfxParamPropMax, 0, hi);
  gProp->propSetInt(p, kOfxParamPropDisplayMin, 0, lo);
  gProp->propSetInt(p, kOfxParamPropDisplayMax, 0, hi);
}
void define_double(OfxParamSetHandle set, const char* name, const char* label, const char* hint,
                   double def, double lo, double hi) {
  OfxPropertySetHandle p = define(set, kOfxParamTypeDouble, name, label, hint);
  gProp->propSetDouble(p, kOfxParamPropDefault, 0, def);
  gProp->propSetDouble(p, kOfxParamPropMin, 0, lo);
  gProp->propSetDouble(p, kOfxParamPropMax, 0, hi);
  gProp->propSetDouble(p, kOfxParamPropDisplayMin, 0, lo);
  gProp->propSetDouble(p, kOfxParamPropDisplayMax, 0, hi);
}
void define_choice(OfxParamSetHandle set, const char* name, const char* label, const char* hint,
                   std::initializer_list<const char*> options, int def) {
  OfxPropertySetHandle p = define(set, kOfxParamTypeChoice, name, label, hint);
  int i = 0;
  for (const char* o : options) gProp->propSetString(p, kOfxParamPropChoiceOption, i++, o);
  gProp->propSetInt(p, kOfxParamPropDefault, 0, def);
}
OfxPropertySetHandle define_string(OfxParamSetHandle set, const char* name, const char* label,
                                   const char* hint, const char* def, bool read_only) {
  OfxPropertySetHandle p = define(set, kOfxParamTypeString, name, label, hint);
  gProp->propSetString(p, kOfxParamPropDefault, 0, def);
  gProp->propSetString(p, kOfxParamPropStringMode, 0,
                       read_only ? kOfxParamStringIsLabel : kOfxParamStringIsSingleLine);
  if (read_only) {
    gProp->propSetInt(p, kOfxParamPropEnabled, 0, 0);
    gProp->propSetInt(p, kOfxParamPropEvaluateOnChange, 0, 0);
    gProp->propSetInt(p, kOfxParamPropPersistant, 0, 0);
  }
  return p;
}

OfxStatus describe_in_context(OfxImageEffectHandle effect, OfxPropertySetHandle in) {
  const std::string context = prop_string(in, kOfxImageEffectPropContext);
  OfxPropertySetHandle clip = nullptr;
  ok(gEffect->clipDefine(effect, kOfxImageEffectSimpleSourceClipName, &clip), "Source");
  gProp->propSetString(clip, kOfxImageEffectPropSupportedComponents, 0, kOfxImageComponentRGBA);
  gProp->propSetString(clip, kOfxImageEffectPropSupportedComponents, 1, kOfxImageComponentRGB);
  gProp->propSetInt(clip, kOfxImageEffectPropTemporalClipAccess, 0, 1);
  gProp->propSetInt(clip, kOfxImageEffectPropSupportsTiles, 0, 0);
  ok(gEffect->clipDefine(effect, kOfxImageEffectOutputClipName, &clip), "Output");
  gProp->propSetString(clip, kOfxImageEffectPropSupportedComponents, 0, kOfxImageComponentRGBA);
  gProp->propSetInt(clip, kOfxImageEffectPropSupportsTiles, 0, 0);
  if (context == kOfxImageEffectContextGeneral) {
    ok(gEffect->clipDefine(effect, kMaskClip, &clip), "Mask");
    gProp->propSetString(clip, kOfxImageEffectPropSupportedComponents, 0,
                         kOfxImageComponentAlpha);
    gProp->propSetString(clip, kOfxImageEffectPropSupportedComponents, 1, kOfxImageComponentRGBA);
    gProp->propSetInt(clip, kOfxImageClipPropOptional, 0, 1);
    gProp->propSetInt(clip, kOfxImageClipPropIsMask, 0, 1);
    gProp->propSetInt(clip, kOfxImageEffectPropTemporalClipAccess, 0, 1);
    gProp->propSetInt(clip, kOfxImageEffectPropSupportsTiles, 0, 0);
  }
  OfxParamSetHandle s = nullptr;
  ok(gEffect->getParamSet(effect, &s), "the parameter set");
  define_choice(s, P::task, "Task", "Remove object (inpaint the matte) or upscale the clip",
                {"Remove object", "Upscale"}, 0);
  define_choice(s, P::scale, "Scale", "Upscaling factor; the output is this many times larger",
                {"2x", "4x", "8x"}, 0);
  define_double(s, P::strength, "Strength",
                "0 = the model's default; < 1 stays closer to the input", 0.0, 0.0, 1.0);
  define_int(s, P::steps, "Steps", "Sampler steps; 0 = the model's default", 0, 0, 200);
  define_int(s, P::seed, "Seed", "The same seed gives the same frames", 0, 0, 2147483647);
  define_double(s, P::guidance, "Guidance",
                "Equivariance self-guidance strength: -1 = the task's default (the band "
                "rule at 0.8 for upscale, 0.65 for inpaint), 0 = off; at most 1 (the "
                "fraction of the gap to the previous frame removed per step)",
                -1.0, -1.0, 1.0);
  define_choice(s, P::noise, "Noise warp", "How the noise follows the motion",
                {"gp", "integral", "bilinear", "nearest", "iid"}, 0);
  define_int(s, P::propagate, "Propagation radius",
             "Remove object: fill from the background seen up to N frames away (0 = off)", 8, 0,
             64);
  define_string(s, P::model, "Model", "Empty: the server's model (builtin, or an SDXL folder)",
                "", false);
  define_string(s, P::server, "Server address", "Where warpdiff serve listens", kDefaultServer,
                false);
  define_double(s, P::timeout, "Timeout (s)",
                "How long to wait for the server to answer before reporting it missing", 10.0,
                0.1, 600.0);
  define_int(s, P::batch, "Upload batch",
             "Most frames per upload message (fewer when they exceed 32 MB; the server takes a "
             "few messages at a time): memory on both sides is a few times this many frames",
             4, 1, 64);
  define_choice(s, P::range, "Frame range",
                "Which frames form the shot (all are read and uploaded, with the handles)",
                {"Whole clip", "In/out", "Custom"}, 0);
  define_int(s, P::first, "First frame", "Custom range: first frame", 0, -1000000, 1000000);
  define_int(s, P::last, "Last frame", "Custom range: last frame", 0, -1000000, 1000000);
  define_int(s, P::handles, "Handles", "Extra frames before and after the range", 0, 0, 1000);
  define_choice(s, P::matte, "Matte",
                "Where the matte of what to remove comes from (1 = remove). DaVinci Resolve: "
                "always the source's alpha",
                {"Source alpha", "Mask clip"}, context == kOfxImageEffectContextGeneral ? 1 : 0);
  define_choice(s, P::channel, "Mask channel", "Which channel of the Mask clip is the matte",
                {"Alpha", "Red", "Green", "Blue", "Luminance"}, 0);
  OfxPropertySetHandle b = define(s, kOfxParamTypeBoolean, P::invert, "Invert matte",
                                  "The matte marks what to keep instead of what to remove");
  gProp->propSetInt(b, kOfxParamPropDefault, 0, 0);
  b = define(s, kOfxParamTypeBoolean, P::autoProcess, "Process on render",
             "Upload the shot on the first render of an unprocessed frame");
  gProp->propSetInt(b, kOfxParamPropDefault, 0, 1);
  define(s, kOfxParamTypePushButton, P::process, "Process shot",
         "Read the range's frames, upload them and start the shot on the server");
  define(s, kOfxParamTypePushButton, P::cancel, "Cancel", "Stop making this shot");
  define_string(s, P::status, "Status", "queued / frame k of n / done / error", "not processed",
                true);
  define_string(s, P::shot, "Shot", "The shot's key on the server", "", true);
  return kOfxStatOK;
}

// -- the entry point ----------------------------------------------------------------------
const void* fetch(const char* name, int version) {
  return gHost ? gHost->fetchSuite(gHost->host, name, version) : nullptr;
}

OfxStatus on_load() {
  if (!gHost) return kOfxStatErrMissingHostFeature;
  gProp = static_cast<const OfxPropertySuiteV1*>(fetch(kOfxPropertySuite, 1));
  gEffect = static_cast<const OfxImageEffectSuiteV1*>(fetch(kOfxImageEffectSuite, 1));
  gParam = static_cast<const OfxParameterSuiteV1*>(fetch(kOfxParameterSuite, 1));
  gMsg1 = static_cast<const OfxMessageSuiteV1*>(fetch(kOfxMessageSuite, 1));
  gMsg2 = static_cast<const OfxMessageSuiteV2*>(fetch(kOfxMessageSuite, 2));
  if (!gProp || !gEffect || !gParam) return kOfxStatErrMissingHostFeature;
  gHostName = prop_string(gHost->host, kOfxPropName);
  if (gHostName.find("DaVinciResolve") != std::string::npos) gHostKind = HostKind::Resolve;
  else if (gHostName.find("nuke") != std::string::npos) gHostKind = HostKind::Nuke;
  else if (gHostName.find("Natron") != std::string::npos) gHostKind = HostKind::Natron;
  else gHostKind = HostKind::Generic;
  return kOfxStatOK;
}

OfxStatus dispatch(const char* action, OfxImageEffectHandle effect, OfxPropertySetHandle in,
                   OfxPropertySetHandle out) {
  const std::string a = action;
  if (a == kOfxActionLoad) return on_load();
  if (!gProp || !gEffect || !gParam) return kOfxStatErrMissingHostFeature;
  if (a == kOfxActionUnload) return kOfxStatOK;
  if (a == kOfxActionDescribe) return describe(effect);
  if (a == kOfxImageEffectActionDescribeInContext) return describe_in_context(effect, in);
  if (a == kOfxActionCreateInstance) return create_instance(effect);
  if (a == kOfxActionDestroyInstance) return destroy_instance(effect);
  Instance* inst = instance_of(effect);
  if (!inst) return kOfxStatReplyDefault;
  try {
    if (a == kOfxImageEffectActionRender) return render(*inst, in);
    if (a == kOfxActionInstanceChanged) return instance_changed(*inst, in);
    if (a == kOfxImageEffectActionGetFramesNeeded) return frames_needed(*inst, in, out);
    if (a == kOfxImageEffectActionGetRegionsOfInterest)
      return regions_of_interest(*inst, in, out);
    if (a == kOfxImageEffectActionGetRegionOfDefinition)
      return region_of_definition(*inst, in, out);
    if (a == kOfxImageEffectActionIsIdentity) return is_identity(*inst, in, out);
    if (a == kOfxImageEffectActionGetClipPreferences) return clip_preferences(*inst, out);
    if (a == kOfxImageEffectActionBeginSequenceRender ||
        a == kOfxImageEffectActionEndSequenceRender)
      return kOfxStatOK;
  } catch (const wd::Aborted&) {
    return kOfxStatFailed;  // the host stopped this render; nothing to report
  } catch (const wd::Error& e) {
    std::string message = e.what();
    if (e.code == "failed") message = "the shot failed on the server: " + message;
    else if (e.code == "unknown_shot") message += " (the server's cache was cleared: press 'Process shot')";
    else if (e.code == "bad_request") message = "a parameter was refused: " + message;
    persistent_error(*inst, "Warped Diffusion: " + message);
    return kOfxStatFailed;
  } catch (const std::bad_alloc&) {
    persistent_error(*inst, "Warped Diffusion: out of memory; use a shorter range or a smaller "
                            "frame");
    return kOfxStatErrMemory;
  }
  return kOfxStatReplyDefault;
}

OfxStatus main_entry(const char* action, const void* handle, OfxPropertySetHandle in,
                     OfxPropertySetHandle out) {
  try {
    if (!action) return kOfxStatErrBadHandle;
    return dispatch(action, static_cast<OfxImageEffectHandle>(const_cast<void*>(handle)), in, out);
  } catch (const std::bad_alloc&) {
    return kOfxStatErrMemory;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "Warped Diffusion: %s failed: %s\n", action, e.what());
    if (handle && action && std::strcmp(action, kOfxActionLoad) != 0 && gEffect && gProp) {
      try {
        if (Instance* inst = instance_of(static_cast<OfxImageEffectHandle>(const_cast<void*>(handle))))
          persistent_error(*inst, std::string("Warped Diffusion: ") + e.what());
      } catch (...) {
      }
    }
    return kOfxStatFailed;
  } catch (...) {
    return kOfxStatErrUnknown;
  }
}

void set_host(OfxHost* host) { gHost = host; }

OfxPlugin gPlugin = {kOfxImageEffectPluginApi, 1, kPluginId, kVersionMajor, kVersionMinor,
                     set_host, main_entry};

}  // namespace

extern "C" {
__attribute__((visibility("default"))) int OfxGetNumberOfPlugins(void) { return 1; }
__attribute__((visibility("default"))) OfxPlugin* OfxGetPlugin(int nth) {
  return nth == 0 ? &gPlugin : nullptr;
}
}
