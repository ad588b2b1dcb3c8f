"""A marked block in a user's file (``~/.nuke/init.py``): added once, replaced in place, removed
without touching a single line of the user's own."""

from __future__ import annotations

BEGIN = (
    "# >>> warpdiff >>> added by the Warped Diffusion installer; `warpdiff uninstall` removes it"
)
END = "# <<< warpdiff <<<"


def make_block(body: str) -> str:
    return f"{BEGIN}\n{body.rstrip()}\n{END}\n"


def _span(text: str) -> tuple[int, int] | None:
    start = text.find(BEGIN)
    if start < 0:
        return None
    end = text.find(END, start)
    if end < 0:
        raise ValueError(f"the installer's block starts but never ends (no line {END!r})")
    end += len(END)
    if text[end : end + 1] == "\n":
        end += 1
    return start, end


def with_block(text: str, block: str) -> str:
    """``text`` with ``block`` in place of the old one, or appended after the user's lines."""
    span = _span(text)
    if span is not None:
        return text[: span[0]] + block + text[span[1] :]
    if text and not text.endswith("\n"):
        text += "\n"
    return text + block


def without_block(text: str) -> str:
    """``text`` with the installer's block taken out (the user's lines untouched)."""
    span = _span(text)
    return text if span is None else text[: span[0]] + text[span[1] :]


def has_block(text: str, block: str) -> bool:
    return block in text
