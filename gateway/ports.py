"""Serial ports and PTYs read as plain byte streams, for ``tgw decode`` and ``tgw capture``.

A terminal device starts in its line discipline's "cooked" mode, which edits what
arrives (CR becomes LF, 0x03 is swallowed as Ctrl-C, input waits for a newline): a
binary stream read that way loses frames. :func:`open_device` puts a terminal in raw
mode at the baud rate asked for, as ``stty raw`` would, and leaves it so. The gateway's
own serial sources do the same through pyserial.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import termios
import tty
from typing import BinaryIO, cast

from protocol.errors import GatewayError, os_error_reason

__all__ = ["DEFAULT_BAUD", "PortError", "is_device", "open_device", "read_some"]

DEFAULT_BAUD = 115200

_CFLAG = 2
_ISPEED = 4
_OSPEED = 5


class PortError(GatewayError):
    """A port cannot be opened or set up. ``str()`` names it and the problem."""


def is_device(name: str) -> bool:
    """Whether ``name`` is a character device (a serial port, a PTY, ``/dev/zero``)."""
    try:
        return stat.S_ISCHR(os.stat(name).st_mode)
    except OSError:
        return False  # opening it will say why


def open_device(name: str, *, baud: int, terminal_only: bool = False) -> BinaryIO:
    """Open the character device ``name`` for reading; a terminal in raw mode at ``baud``.

    The open does not wait for a modem's carrier, and the port does not become the
    controlling terminal of this process. With ``terminal_only``, a device that is not a
    terminal is refused. Raise :class:`PortError` when it cannot be opened or set up.
    """
    try:
        descriptor = os.open(name, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise PortError(f"{name}: cannot open: {os_error_reason(exc)}") from exc
    try:
        if os.isatty(descriptor):
            _set_raw(name, descriptor, baud)
        elif terminal_only:
            raise PortError(f"{name}: not a serial port or terminal")
        os.set_blocking(descriptor, True)
    except BaseException:
        os.close(descriptor)
        raise
    return cast(BinaryIO, os.fdopen(descriptor, "rb"))


def read_some(file: BinaryIO, size: int, *, terminal: bool) -> bytes:
    """Read what is available, up to ``size`` bytes, waiting for at least one.

    Return b"" at the end, which for a ``terminal`` includes its hanging up (a USB
    adapter unplugged, a PTY's other side closed). Raise OSError for other failures.
    """
    try:
        return cast(io.BufferedReader, file).read1(size)
    except OSError as exc:
        if exc.errno == errno.EIO and terminal:
            return b""
        raise


def _set_raw(name: str, descriptor: int, baud: int) -> None:
    speed = getattr(termios, f"B{baud}", None)
    if not isinstance(speed, int):
        raise PortError(
            f"{name}: cannot set {baud} baud: not a standard rate (such as 9600, 115200 or 921600)"
        )
    try:
        tty.setraw(descriptor, termios.TCSANOW)
        attributes = termios.tcgetattr(descriptor)
        attributes[_CFLAG] |= termios.CLOCAL | termios.CREAD  # no modem control lines
        attributes[_ISPEED] = attributes[_OSPEED] = speed
        termios.tcsetattr(descriptor, termios.TCSANOW, attributes)
    except termios.error as exc:
        reason = os_error_reason(OSError(*exc.args))
        raise PortError(f"{name}: cannot set raw mode at {baud} baud: {reason}") from exc
