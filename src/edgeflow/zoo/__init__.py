"""The problem zoo: named problems with their default sizes, learning rate and step budget.

* ``registry.py``: ``ProblemSpec``, the table ``PROBLEMS`` and ``make_problem``;
* the builders, by family: ``vision.py`` (MLP, CNN, ViT, ResNet classifiers), ``sequence.py``
  (transformers), ``regression.py`` (teacher–student), ``toys.py`` (toy losses); ``network.py``
  holds what every network builder shares;
* ``factory.py``: users' own ``package.module:function`` factories; ``params.py``: the checks of
  problem parameters against their defaults;
* ``data.py``, ``cifar10.py``, ``models.py``: the data sets and the architectures.

A new problem is one builder function plus one ``ProblemSpec`` entry in ``PROBLEMS``; then
``python -m edgeflow.catalog`` lets the command line know it without importing torch.
"""

from edgeflow.catalog import is_factory
from edgeflow.zoo.registry import (
    DEFAULT_PROBLEM,
    PROBLEMS,
    ProblemSpec,
    make_problem,
    problem_params,
    problem_spec,
)

__all__ = [
    "DEFAULT_PROBLEM",
    "PROBLEMS",
    "ProblemSpec",
    "is_factory",
    "make_problem",
    "problem_params",
    "problem_spec",
]
