"""The gateway's runtime: sources, dispatch, relays and the ``tgw`` command line."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("telemetry-gateway")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
