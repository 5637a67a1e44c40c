"""Tools an operator runs from a checkout (``python scripts/NAME.py --help``); they may
import ``gateway``, ``fwsim`` and ``protocol``, and nothing imports them but their tests."""
