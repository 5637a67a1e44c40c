"""The version of the installed ``telemetry-gateway`` distribution (``tgw``, ``fwsim``)."""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("telemetry-gateway")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
