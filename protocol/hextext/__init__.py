"""Hex text back into bytes: captures printed by terminals, hex dumpers and logic analysers.

Ask :func:`looks_like_hex_text` about the first few KiB of a file; if it says yes, feed
the text to a :class:`HexTextParser` as it is read and hand the bytes it returns to the
decoder::

    parser = HexTextParser()
    for text in chunks:  # str, cut anywhere
        decoder.feed(parser.feed(text))  # raises HexTextError naming the line
    decoder.feed(parser.finish())

Whatever the size of the text, the parser holds one line of it (the lines of one CSV
row), of at most ``MAX_LINE`` characters, and its work grows linearly with the text.
Lines of continuous hex may be longer: they are read in pieces. The layouts it reads
(``xxd``, ``hexdump -C``, ``od``, C arrays, continuous hex, Saleae CSV exports), how it
tells them apart and what it refuses are described in docs/hex-input.md.
"""

from protocol.hextext.errors import HexTextError
from protocol.hextext.parser import MAX_LINE, HexTextParser, looks_like_hex_text

__all__ = ["MAX_LINE", "HexTextError", "HexTextParser", "looks_like_hex_text"]
