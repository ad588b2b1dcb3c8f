"""The documented shape of each benchmark's JSON, checked before it is printed.

A schema is a type (or a tuple of types: ``(float, None)`` allows null), a dict of exact keys
to schemas (every key required, no others), or :class:`MapOf` (any string keys, one schema for
every value). ``bool`` never passes for ``int`` or ``float``; an ``int`` passes for ``float``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NUMBER = (int, float)


@dataclass(frozen=True)
class MapOf:
    """A JSON object with any keys whose values all match ``values``."""

    values: Any


@dataclass(frozen=True)
class AnyOf:
    """A value matching at least one of ``options``."""

    options: tuple


def _type_ok(value: object, types: tuple) -> bool:
    if value is None:
        return None in types or type(None) in types
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, tuple(t for t in types if isinstance(t, type)))


def check(value: object, schema: Any, path: str = "$") -> None:
    """Raise ``ValueError`` naming the first place where ``value`` does not match ``schema``."""
    if isinstance(schema, AnyOf):
        errors = []
        for option in schema.options:
            try:
                check(value, option, path)
                return
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(" / ".join(errors))
    if isinstance(schema, MapOf):
        if not isinstance(value, dict) or not value:
            raise ValueError(f"{path}: expected a non-empty object, got {value!r:.80}")
        for key, item in value.items():
            check(item, schema.values, f"{path}.{key}")
    elif isinstance(schema, dict):
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected an object, got {value!r:.80}")
        missing, extra = set(schema) - set(value), set(value) - set(schema)
        if missing or extra:
            raise ValueError(f"{path}: missing keys {sorted(missing)}, unexpected {sorted(extra)}")
        for key, sub in schema.items():
            check(value[key], sub, f"{path}.{key}")
    else:
        types = schema if isinstance(schema, tuple) else (schema,)
        if not _type_ok(value, types):
            raise ValueError(f"{path}: expected {types}, got {value!r:.80}")


MACHINE = MapOf((str, int, float))

# warpdiff bench memory (warpcore/bench/memory.py): estimate vs measured peak, per case.
MEMORY_ROW = {
    "task": str,
    "frame": str,  # input WxH
    "output": str,  # output WxH
    "tile": int,  # tile side in output pixels, 0 = whole frames
    "tiles": int,
    "estimate_bytes": int,
    "measured_bytes": int,
    "error": float,  # estimate / measured - 1
    "parts": {"weights": int, "model_call": int, "vae": int, "frame_state": int, "host": int},
    "seconds_per_frame": float,
    "budget_bytes": (int, None),  # the budget a planned case was tiled for
}
# --model sdxl-random --device cpu: one UNet call (and its backward), estimated vs measured.
UNET_CALL_ROW = {
    "model": str,  # sdxl-random-full (sdxl-random-tiny with --smoke)
    "part": str,  # unet (one call) or vae-decode (estimate: the planner's VAE phase)
    "device": str,
    "dtype": str,
    "tile": str,  # WxH pixels (latent = /8)
    "backward": bool,  # + the backward pass to the input (network-grad guidance)
    "threads": int,
    "weights_bytes": int,  # resident before the reset, not in measured
    "traced_bytes": int,  # the meta trace at this size, uncalibrated
    "estimate_bytes": int,  # ModelCost.call: the fitted trace, calibrated for the device
    "measured_bytes": int,
    "error": float,  # estimate / measured - 1
    "seconds": float,
}
MEMORY_SCHEMA = {
    "device": str,
    "method": str,
    "machine": MACHINE,
    "cases": MapOf(AnyOf((MEMORY_ROW, UNET_CALL_ROW))),
}
