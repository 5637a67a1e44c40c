"""The gateway's runtime: sources, dispatch, relays and the ``tgw`` command line."""

from protocol.version import __version__

__all__ = ["__version__"]
