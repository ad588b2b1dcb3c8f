"""One module per install step; each has ``plan(ctx) -> str`` and ``apply(ctx) -> str``."""
