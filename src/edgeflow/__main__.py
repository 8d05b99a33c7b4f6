"""``python -m edgeflow`` (and ``torchrun … -m edgeflow run …``): the command line."""

from edgeflow.cli import main
from edgeflow.distributed import exit_process

exit_process(main())
