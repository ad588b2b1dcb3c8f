"""Subcommands of ``warpdiff``: thin argument parsing over the engine's functions."""
