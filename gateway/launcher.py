"""The ``tgw`` program's entry point: loads the command line, and exits 130 quietly on a
Ctrl-C even while the commands are still being imported."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> int:
    """Import and run :func:`gateway.cli.main`; a Ctrl-C during the import exits 130."""
    try:
        from gateway.cli import main as run  # noqa: PLC0415 - inside the try, on purpose
    except KeyboardInterrupt:
        return 130  # gateway.commands.options.EXIT_INTERRUPTED, which is not loaded yet
    return run()


if __name__ == "__main__":
    sys.exit(main())
