"""The fault suite of issue 10 ("Nothing lost when anything restarts"): real mosquitto,
fwsim and ``tgw run`` processes, faults applied to them, and what a subscriber got
counted against what the device sent.

``scripts/faults.py`` runs the full scenarios for an operator; ``tests/scripts/`` runs
short ones in CI. Both call :mod:`scripts.fault_suite.scenarios`.
"""
