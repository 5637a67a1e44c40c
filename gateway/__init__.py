"""The gateway: its runtime, outputs, the ``tgw`` command line and its CI tools.

Nothing is imported here, so that ``tgw`` starts with nothing heavy loaded (see
:mod:`gateway.launcher`); the version is :data:`protocol.version.__version__`.
"""
