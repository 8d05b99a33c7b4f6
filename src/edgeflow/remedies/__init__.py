"""Remedies for edge-of-stability instabilities that wrap an optimizer's step.

The remedies that replace GD's step by a model's (Edge Flow's capped center step and its relatives)
are the ``mitigated`` flow's (``edgeflow.processes.mitigated``); the ones here take any optimizer's
own step and change only what it would do wrong.
"""

from edgeflow.remedies.oscillation_cap import CappedRun, OscillationCap

__all__ = ["CappedRun", "OscillationCap"]
