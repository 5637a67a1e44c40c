"""Sans-I/O core of the telemetry gateway: profiles, catalogs, schemas, decoder, encoder.

Nothing here does I/O beyond reading configuration files: no asyncio, sockets or
serial ports. Bytes go in, frames and errors come out.
"""

from protocol.config import load_catalog, load_profile
from protocol.decoder import StreamDecoder
from protocol.encoder import FrameEncoder
from protocol.errors import ConfigError, EncodeError, GatewayError, ProtocolError
from protocol.events import DecoderStatistics, ErrorKind, Event, Frame, StreamError
from protocol.schema import Schema, compile_schema, load_schema

__all__ = [
    "ConfigError",
    "DecoderStatistics",
    "EncodeError",
    "ErrorKind",
    "Event",
    "Frame",
    "FrameEncoder",
    "GatewayError",
    "ProtocolError",
    "Schema",
    "StreamDecoder",
    "StreamError",
    "compile_schema",
    "load_catalog",
    "load_profile",
    "load_schema",
]
