"""``warpdiff install``: the installer's ``install`` (see ``installer/install.py``)."""

from __future__ import annotations

import argparse

from installer import install


def add_arguments(parser: argparse.ArgumentParser) -> None:
    install.add_install_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return install.run_install(args)
