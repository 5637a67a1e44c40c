"""The ``tgw`` commands, one module each (``add_*_command`` registers it with the parser).

Commands do not import each other: what several need lives in ``options`` (shared
options and their checks), ``serving`` (running a gateway in the foreground) and
``progress`` (progress bars).
"""
