"""Colour management with OpenColorIO: what the model sees and what the files hold.

Colourspaces are OCIO names or aliases from ``$OCIO`` when it is set, else the built-in
studio config (``srgb_tx``, ``lin_rec709``, ``ACEScg``, ``g24_rec709``, ``acescct`` ...).
Defaults by file type: video, PNG and TIFF hold display-referred sRGB / Rec.709
(``srgb_tx``); EXR holds scene-linear Rec.709 (``lin_rec709``).

The model works on display-referred values in [0, 1] (:data:`MODEL_SPACE`). A clip in another
space is converted there; when that space can exceed 1 (scene-linear, log, HDR) a reversible
rational highlight knee above :data:`KNEE` compresses (0.8, inf) into (0.8, 1) for the model
and expands it back after, so highlights above 1 survive the trip. Pixels the model did not
make are never sent through it: the job copies them (converted only when the output space
differs from the input's).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

from warpcore.errors import InvalidInput

MODEL_SPACE = "srgb_tx"
DEFAULTS = {"video": "srgb_tx", "png": "srgb_tx", "tiff": "srgb_tx", "exr": "lin_rec709"}
KNEE = 0.8  # values above this (in MODEL_SPACE) are compressed when the input can exceed 1
_KNEE_SCALE = 0.2  # display white (1.0) lands at 0.9
_KNEE_MAX = 0.99  # the largest model value expanded back (about 39 linear)
_BUILTIN = "ocio://studio-config-latest"


@functools.lru_cache(maxsize=4)
def _config(source: str):  # noqa: ANN202 -- PyOpenColorIO.Config
    import PyOpenColorIO as ocio

    try:
        if source.startswith("ocio://"):
            return ocio.Config.CreateFromBuiltinConfig(source)
        return ocio.Config.CreateFromFile(source)
    except Exception as exc:  # OCIO raises its own Exception type
        raise InvalidInput(f"OCIO: cannot load the config {source!r} ({exc})") from exc


def config():  # noqa: ANN201 -- PyOpenColorIO.Config
    """``$OCIO`` when it is set, else OpenColorIO's built-in studio config."""
    return _config(os.environ.get("OCIO") or _BUILTIN)


def resolve(name: str, what: str = "colorspace") -> str:
    """The canonical name of a colourspace (names and aliases); an error lists some choices."""
    cfg = config()
    canonical = cfg.getCanonicalName(name) if name else ""
    if not canonical:
        names = [cs.getName() for cs in cfg.getColorSpaces()]
        shown = ", ".join(["srgb_tx", "lin_rec709", "ACEScg", "g24_rec709", "acescct"])
        raise InvalidInput(
            f"{what}: unknown colourspace {name!r}; accepted: the {len(names)} names and "
            f"aliases of the OCIO config (e.g. {shown})"
        )
    return canonical


def default_for(kind: str) -> str:
    """The colourspace a file type holds by default ("video", "png", "tiff", "exr")."""
    return DEFAULTS.get(kind, MODEL_SPACE)


def is_bounded(name: str) -> bool:
    """True for spaces whose values live in [0, 1] (SDR video / texture encodings)."""
    cs = config().getColorSpace(name)
    return cs is not None and cs.getEncoding() in ("sdr-video", "data")


@functools.lru_cache(maxsize=32)
def _cpu(src: str, dst: str):  # noqa: ANN202
    return config().getProcessor(src, dst).getDefaultCPUProcessor()


def convert(rgb: np.ndarray, src: str, dst: str) -> np.ndarray:
    """``rgb`` (H, W, 3|4) from ``src`` to ``dst`` (alpha untouched); a copy, or ``rgb`` if same."""
    src, dst = resolve(src), resolve(dst)
    if src == dst:
        return rgb
    import PyOpenColorIO as ocio

    out = np.array(rgb, dtype=np.float32, order="C")  # a copy
    colour = out if out.shape[-1] == 3 else np.ascontiguousarray(out[..., :3])
    h, w = colour.shape[:2]
    _cpu(src, dst).apply(ocio.PackedImageDesc(colour, w, h, 3))  # in place, no Python loop
    if colour is not out:
        out[..., :3] = colour
    return out


def knee(x: np.ndarray) -> np.ndarray:
    """Compress values above :data:`KNEE` into (KNEE, 1): ``k + s t / (1 + t)``, t = (x-k)/s."""
    t = np.maximum(x - KNEE, 0.0) / _KNEE_SCALE  # 0 at and below the knee: y = x there
    return (np.minimum(x, KNEE) + _KNEE_SCALE * t / (1.0 + t)).astype(np.float32)


def unknee(y: np.ndarray) -> np.ndarray:
    """The inverse of :func:`knee` (model values are capped at 0.99 first)."""
    s = np.maximum(np.minimum(y, _KNEE_MAX) - KNEE, 0.0) / _KNEE_SCALE
    return (np.minimum(y, KNEE) + _KNEE_SCALE * s / (1.0 - s)).astype(np.float32)


@dataclass(frozen=True)
class ColourPlan:
    """Where a job's pixels live: the input file's space, the output's, the model's."""

    input: str
    output: str
    compress: bool  # the highlight knee is applied (the input space can exceed 1)

    @classmethod
    def make(
        cls, input_kind: str, output_kind: str, colorspace: str | None, output_cs: str | None
    ) -> ColourPlan:
        """Input: ``colorspace`` or the input type's default. Output: ``output_cs``; else the
        input's space when both file types default alike (EXR to EXR keeps ACEScg), else the
        output type's default (a video written to EXR is linearised)."""
        src = resolve(colorspace or default_for(input_kind), "--colorspace")
        if output_cs:
            dst = resolve(output_cs, "--output-colorspace")
        elif default_for(input_kind) == default_for(output_kind):
            dst = src
        else:
            dst = resolve(default_for(output_kind))
        return cls(src, dst, not is_bounded(src))

    def to_model(self, frame: np.ndarray) -> np.ndarray:
        """The frame as the model sees it: MODEL_SPACE, values in [0, 1]; alpha kept."""
        out = convert(frame, self.input, MODEL_SPACE)
        if out is frame:
            out = frame.copy()
        if self.compress:
            out[..., :3] = knee(out[..., :3])
        return np.clip(out, 0.0, 1.0)

    def from_model(self, frame: np.ndarray) -> np.ndarray:
        """A model frame back in the output space (highlights expanded)."""
        out = np.array(frame, dtype=np.float32)
        if self.compress:
            out[..., :3] = unknee(out[..., :3])
        return convert(out, MODEL_SPACE, self.output)

    def passthrough(self, frame: np.ndarray) -> np.ndarray:
        """An input frame in the output space, not through the model (bit-exact when same)."""
        return convert(frame, self.input, self.output)


_AP0 = (0.7347, 0.2653, 0.0, 1.0, 0.0001, -0.077, 0.32168, 0.33767)
_AP1 = (0.713, 0.293, 0.165, 0.830, 0.128, 0.044, 0.32168, 0.33767)
# Spaces whose white is not D65: their published primaries (the XYZ-D65 route below would
# give them chromatically adapted to D65).
_NATIVE_PRIMARIES = {
    "ACES2065-1": _AP0,
    "ACEScg": _AP1,
    "ACEScc": _AP1,
    "ACEScct": _AP1,
    "sRGB Encoded AP1": _AP1,
    "Gamma 2.2 Encoded AP1": _AP1,
}


def chromaticities(name: str) -> tuple[float, ...] | None:
    """EXR ``chromaticities`` (rx, ry, gx, gy, bx, by, wx, wy) of a space; None if unknown.

    ACES spaces get their published AP0/AP1 primaries and ACES white; other spaces are
    measured through the config's CIE XYZ (D65) interchange space."""
    canonical = resolve(name)
    if canonical in _NATIVE_PRIMARIES:
        return _NATIVE_PRIMARIES[canonical]
    cfg = config()
    if not cfg.hasRole("cie_xyz_d65_interchange"):
        return None
    xyz = cfg.getRoleColorSpace("cie_xyz_d65_interchange")
    try:
        proc = _cpu(canonical, xyz)
    except Exception:  # noqa: BLE001 -- no path to XYZ in this config: leave the header alone
        return None
    out: list[float] = []
    for rgb in ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]):
        x, y, z = proc.applyRGB(rgb)
        total = x + y + z
        if total <= 0:
            return None
        out += [x / total, y / total]
    return tuple(out)
