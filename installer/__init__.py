"""The installer: the server environment, the host plugins, a user service, and ``doctor``.

Standard library only: it runs before anything else is installed (``python3 installer/install.py``)
and again as ``warpdiff install|uninstall|doctor``.
"""
