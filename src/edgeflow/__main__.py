"""``python -m edgeflow`` (and ``torchrun … -m edgeflow run …``): the command line."""

import sys

from edgeflow.cli import main

code = main()
# A rank that torchrun started leaves through the distributed module (imported by then, with torch);
# a plain call never imported it.
if "edgeflow.distributed" in sys.modules:
    sys.modules["edgeflow.distributed"].exit_process(code)
sys.exit(code)
