"""Integrations with training frameworks, each an optional extra imported only on demand.

* ``edgeflow.integrations.lightning``: ``StabilityCallback``, a PyTorch Lightning ``Callback`` that runs
  ``edgeflow.StabilityMonitor`` on the trainer's optimizer (``pip install 'edgeflow[lightning]'``).

Importing this package imports none of them; importing one without its framework raises an
``ImportError`` that names the extra to install.
"""
