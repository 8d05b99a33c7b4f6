"""``python -m edgeflow`` (and ``torchrun … -m edgeflow run …``): the command line."""

import sys

from edgeflow.cli import main

sys.exit(main())
