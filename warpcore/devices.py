"""Which compute devices this build of torch can use, and checking a ``--device`` value."""

from __future__ import annotations

from warpcore.errors import InvalidInput


def available() -> list[str]:
    """The devices this machine and this torch build can run on, e.g. ``['cpu', 'cuda:0']``."""
    import torch

    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def check_device(name: str, what: str = "--device") -> str:
    """``name`` when this build can use it; else :class:`InvalidInput` listing what it can."""
    import torch

    have = available()
    listed = ", ".join(have + (["cuda"] if any(d.startswith("cuda") for d in have) else []))
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidInput(
            f"{what}: {name!r} is not a device name; this build has: {listed}"
        ) from None
    if device.type == "cpu":
        return name
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "a CPU-only torch build" if torch.version.cuda is None else "no visible GPU"
            raise InvalidInput(
                f"{what}: {name!r} is not available ({build}); this build has: {listed}"
            )
        if device.index is not None and device.index >= count:
            raise InvalidInput(f"{what}: {name!r} does not exist; this build has: {listed}")
        return name
    if name in have:
        return name
    raise InvalidInput(f"{what}: {name!r} is not available here; this build has: {listed}")
