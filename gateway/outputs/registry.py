"""The outputs a gateway can have: one factory each, tried in this order.

Adding an output is a module with a ``build(context)`` factory, its section in
:mod:`gateway.config`, and one line here.
"""

from __future__ import annotations

from gateway.outputs import file, mqtt, websocket
from gateway.runtime.output import OutputFactory

__all__ = ["OUTPUTS"]

OUTPUTS: tuple[OutputFactory, ...] = (websocket.build, mqtt.build, file.build)
"""Every output's factory; each returns None when its section turns it off."""
