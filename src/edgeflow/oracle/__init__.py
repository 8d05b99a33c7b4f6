"""Loss oracle: loss, gradients, HVPs and Hessian eigenpairs over a flat parameter vector."""

from edgeflow.oracle.lanczos import Eigenpairs, lanczos
from edgeflow.oracle.problem import Counts, Problem, SharpnessTracker

__all__ = ["Counts", "Eigenpairs", "Problem", "SharpnessTracker", "lanczos"]
