"""The loss oracle: full-batch loss, gradients, Hessian-vector products and sharpness of a loss
over one flat parameter vector ``w``.

A ``Problem`` is a sum of *terms* ``L(w) = Σ_i T_i(w)``; a module on a dataset has one term per chunk
of examples (``chunk_size``), each already divided by the full dataset size, so chunking only changes
float rounding. Every derivative comes from ``torch.func`` applied to a term and summed over terms.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, grad_and_value, vjp, vmap

from edgeflow import distributed as parallel
from edgeflow.errors import ConfigError, invalid_choice
from edgeflow.oracle.lanczos import MAX_ITER, Eigenpairs, lanczos, tracking_tol
from edgeflow.utils import DTYPES, check_memory, dtype_name, positive_int, resolve_device, resolve_dtype

Term = Callable[[Tensor], Tensor]
LOSSES = ("mse", "ce")
#: oracle calls in gradient evaluations, for costs and budgets: an HVP is a forward-over-reverse pass
#: (2.1–2.2 gradients' time on the zoo's problems), a third-derivative contraction three reverse
#: passes, a loss a forward pass alone (0.24–0.37 of a gradient's time)
HVP_GRADIENTS, THIRD_GRADIENTS, LOSS_GRADIENTS = 2.0, 3.0, 0.5


@dataclass
class Counts:
    """Oracle evaluations. One vmapped gradient at m points counts m gradients."""

    loss: int = 0
    grad: int = 0
    hvp: int = 0
    third: int = 0  # gradients of uᵀ∇²L(w)v

    def copy(self) -> Counts:
        return Counts(**asdict(self))

    def __sub__(self, other: Counts) -> Counts:
        return Counts(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})

    def __add__(self, other: Counts) -> Counts:
        return Counts(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def add_(self, other: Counts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def gradients(self) -> float:
        """These evaluations in gradient evaluations (``HVP_GRADIENTS`` and the like)."""
        return (
            self.grad + HVP_GRADIENTS * self.hvp + THIRD_GRADIENTS * self.third + LOSS_GRADIENTS * self.loss
        )


class Problem:
    """A differentiable full-batch loss over a flat parameter vector."""

    def __init__(
        self,
        terms: Sequence[Term],
        w0: Tensor,
        *,
        name: str = "custom",
        unflatten: Callable[[Tensor], dict[str, Tensor]] | None = None,
        info: dict | None = None,
        sharded: bool = False,
    ) -> None:
        _check_w0(w0)
        self.terms = list(terms)
        self.w0 = w0.detach().clone()
        self.name = name
        self.unflatten = unflatten
        self.info = dict(info or {})
        self.counts = Counts()
        #: the terms are this rank's share of the examples: every evaluation is summed over ranks
        self.sharded = sharded
        self._grad_terms = [grad(t) for t in self.terms]
        self._grad_value_terms = [grad_and_value(t) for t in self.terms]
        # (X, Y, the loss term of some of them over a count) where the loss is a mean over examples
        # (from_module): what mini-batches are drawn from
        self._examples: tuple[Tensor, Tensor, Callable[[Tensor, Tensor, int], Term]] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_function(
        cls,
        fn: Term,
        w0: Tensor | Sequence[float],
        *,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        name: str = "function",
    ) -> Problem:
        """``fn`` maps a 1-D tensor to a scalar tensor using torch operations only; it is evaluated
        once at ``w0`` to check that it returns a finite scalar."""
        if not callable(fn):
            raise ConfigError(f"fn must be a function of the parameter vector, got {type(fn).__name__}")
        if not isinstance(w0, Tensor):
            try:
                # Plain numbers are float64 (toy problems are where precision decides the answer).
                w0 = torch.as_tensor(w0, dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError):
                raise ConfigError(f"w0 must be a 1-D sequence of real numbers, got {w0!r}") from None
        if w0.is_complex():
            raise ConfigError(f"w0 must be real (float32 or float64), got {dtype_name(w0.dtype)}")
        default = w0.dtype if w0.is_floating_point() else torch.float64
        w0 = w0.to(dtype=resolve_dtype(dtype, default), device=resolve_device(device))
        problem = cls([fn], w0, name=name)
        _check_loss(fn, problem.w0)
        return problem

    @classmethod
    def from_module(
        cls,
        model: nn.Module,
        data: tuple[Tensor, Tensor],
        loss: str = "mse",
        *,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        chunk_size: int | None = None,
        name: str = "module",
        distributed: bool | None = None,
    ) -> Problem:
        """Full-batch loss of ``model`` on ``data = (X, Y)``.

        ``loss="mse"`` is ``½·mean_i ‖f(x_i) − y_i‖²``; integer labels become one-hot targets.
        ``loss="ce"`` is the mean cross-entropy; ``Y`` holds labels or class probabilities.
        A sequence model's output ``(n, positions..., C)`` is scored at every position, and each
        example's loss is the mean over its positions.

        ``distributed`` (default: whether a ``torch.distributed`` process group of more than one
        rank is initialized, as under ``torchrun``): every rank passes the full data, keeps its
        contiguous share of the examples, and every evaluation is all-reduced into the full-batch
        value, so all ranks see the same numbers.
        """
        if loss not in LOSSES:
            raise invalid_choice("loss", loss, LOSSES)
        if not (
            isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data)
        ):
            raise ConfigError(f"data must be a pair of tensors (X, Y), got {_kind(data)}")
        X, Y = data
        if X.ndim == 0 or Y.ndim == 0:
            raise ConfigError(
                f"X and Y need an example axis, got shapes {tuple(X.shape)} and {tuple(Y.shape)}"
            )
        if len(X) != len(Y):
            raise ConfigError(f"data has {len(X)} inputs but {len(Y)} targets")
        n = len(X)
        if n == 0:
            raise ConfigError("data is empty")
        first = next(model.parameters(), None)
        if first is None:
            raise ConfigError("model has no parameters")
        for key, p in model.named_parameters():
            if not p.is_floating_point():
                raise ConfigError(
                    f"model parameter {key!r} is {dtype_name(p.dtype)}; parameters must be real floats"
                )
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, first.dtype)
        count = sum(p.numel() for p in model.parameters())
        # The model is the user's, already in memory; what this makes is the flat w0 and the
        # problem's own copy of it (a converted model and data come on top where dtype or device change).
        check_memory(
            2 * count * dt.itemsize,
            dev,
            f"the model has {count:.3g} parameters: its flat vector w0 and the problem's copy in "
            f"{dtype_name(dt)}",
            "use a smaller model",
        )
        model = model.to(device=dev, dtype=dt)
        X = X.to(device=dev, dtype=dt) if X.is_floating_point() else X.to(device=dev)
        try:
            with torch.no_grad():
                sample = model(X[:1])
        except (RuntimeError, TypeError, ValueError, IndexError) as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(
                f"the model cannot take X (shape {tuple(X.shape)}, {dtype_name(X.dtype)}): {first_line}"
            ) from None
        if not isinstance(sample, Tensor) or sample.ndim < 2:
            raise ConfigError(f"the model must return (n, ..., outputs) for n inputs, got {_kind(sample)}")
        Y = _targets(Y, sample, loss)
        if loss == "mse" and not Y.is_floating_point():
            Y = F.one_hot(Y.long(), sample.shape[-1])
        Y = Y.to(device=dev, dtype=dt) if (loss == "mse" or Y.is_floating_point()) else Y.to(dev)

        names = [k for k, _ in model.named_parameters()]
        shapes = [p.shape for _, p in model.named_parameters()]
        sizes = [p.numel() for _, p in model.named_parameters()]
        buffers = dict(model.named_buffers())
        w0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

        def unflatten(w: Tensor) -> dict[str, Tensor]:
            return {k: t.view(s) for k, t, s in zip(names, torch.split(w, sizes), shapes, strict=True)}

        per_example = _mse_sum if loss == "mse" else _ce_sum

        def chunk_term(x: Tensor, y: Tensor, count: int = n) -> Term:
            def term(w: Tensor) -> Tensor:
                out = functional_call(model, (unflatten(w), buffers), (x,))
                return per_example(out, y) / count

            return term

        sharded = parallel.active() if distributed is None else bool(distributed)
        if sharded and not parallel.active():
            raise ConfigError("distributed=True needs an initialized torch.distributed process group")
        mine = parallel.shard(n) if sharded else slice(0, n)
        X, Y = X[mine], Y[mine]
        size = len(X) if chunk_size is None else positive_int("chunk_size", chunk_size)
        terms = [chunk_term(X[i : i + size], Y[i : i + size]) for i in range(0, len(X), size)]
        info = {"loss": loss, "n": n, "chunk_size": size, "shard": [mine.start, mine.stop]}
        problem = cls(terms, w0, name=name, unflatten=unflatten, info=info, sharded=sharded)
        problem._examples = (X, Y, chunk_term)
        # One evaluation now: a loss that is NaN at w0 otherwise surfaced as "a Hessian-vector
        # product is not finite (the iterate has overflowed)" deep inside the first step.
        value = float(problem.loss(problem.w0))
        problem.counts = Counts()
        if not math.isfinite(value):
            raise ConfigError(
                f"the loss is {value} at the model's initial parameters; check the model and data"
            )
        return problem

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return self.w0.numel()

    @property
    def dtype(self) -> torch.dtype:
        return self.w0.dtype

    @property
    def device(self) -> torch.device:
        return self.w0.device

    # ------------------------------------------------------------------ evaluations
    def loss(self, w: Tensor) -> Tensor:
        self.counts.loss += 1
        with torch.no_grad():
            return self._total(_sum(t(w) for t in self.terms))[0]

    def losses(self, W: Tensor) -> Tensor:
        """Losses (m,) at the rows of ``W`` in one vmapped call."""
        self.counts.loss += W.shape[0]
        with torch.no_grad():
            return self._total(_sum(vmap(t)(W) for t in self.terms))[0]

    def grad(self, w: Tensor) -> Tensor:
        self.counts.grad += 1
        return self._total(_sum(g(w) for g in self._grad_terms))[0]

    def value_and_grad(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """Loss and gradient for the price of one gradient."""
        self.counts.grad += 1
        pairs = [gv(w) for gv in self._grad_value_terms]
        return self._total(_sum(v for _, v in pairs), _sum(g for g, _ in pairs))

    def grads(self, W: Tensor) -> Tensor:
        """Gradients at the rows of ``W`` (m × d) in one vmapped call."""
        self.counts.grad += W.shape[0]
        return self._total(_sum(vmap(g)(W) for g in self._grad_terms))[0]

    def values_and_grads(self, W: Tensor) -> tuple[Tensor, Tensor]:
        """Losses (m,) and gradients (m × d) at the rows of ``W`` in one vmapped call."""
        self.counts.grad += W.shape[0]
        pairs = [vmap(gv)(W) for gv in self._grad_value_terms]
        return self._total(_sum(v for _, v in pairs), _sum(g for g, _ in pairs))

    def hvp(self, w: Tensor, v: Tensor) -> Tensor:
        """``∇²L(w) v``, reverse-over-reverse: on the CPU it measured 1.7× faster than
        forward-over-reverse (``jvp`` of ``grad``) on the default MLP, with the same result
        (``benchmarks/oracle.py``)."""
        self.counts.hvp += 1
        return self._total(_sum(vjp(g, w)[1](v)[0] for g in self._grad_terms))[0]

    def hvps(self, w: Tensor, V: Tensor) -> Tensor:
        """``∇²L(w) v`` for every row ``v`` of ``V`` (m × d), counted as m HVPs. One vmapped call
        shares the forward and backward pass at ``w`` (about 4× faster per product than a loop on
        the digits MLP on the CPU); a sharded problem all-reduces the whole block at once."""
        self.counts.hvp += V.shape[0]
        return self._total(_sum(products for _, products in self._pullbacks(w, V)))[0]

    def _pullbacks(self, w: Tensor, V: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        """Per term: its gradient at ``w`` (the primal pass) and its Hessian's products with the
        rows of ``V`` (one vmapped pullback)."""
        for g in self._grad_terms:
            gradient, product = vjp(g, w)
            yield gradient, vmap(product)(V)[0]

    def grad_and_hvps(self, w: Tensor, V: Tensor) -> tuple[Tensor, Tensor]:
        """``(∇L(w), ∇²L(w) V)``, counted as one gradient and m HVPs: the gradient is the primal of
        the reverse-over-reverse products, so it comes with them at no extra pass, and the m
        products share one pass (one vmapped call). On the digits MLP, Edge Flow's sub-step made as
        gradients at c ± ru and this call costs 1/1.4 of gradients at three points and two separate
        HVPs (``benchmarks/oracle.py``); a sharded problem all-reduces both results at once."""
        self.counts.grad += 1
        self.counts.hvp += V.shape[0]
        parts = list(self._pullbacks(w, V))
        return self._total(_sum(a for a, _ in parts), _sum(b for _, b in parts))

    def grad_and_hvp_of_grad(self, w: Tensor, scale: Tensor | float = 1.0) -> tuple[Tensor, Tensor]:
        """``(∇L(w), ∇²L(w) (scale·∇L(w)))``, counted as one gradient and one HVP: the modified
        flow's two evaluations (``scale`` a number, or a diagonal such as a preconditioner's P⁻¹).
        With one term the product pulls the gradient back through the pass that computed it, so
        there is no second primal pass; with several (chunks) every chunk's graph would have to be
        held until the full gradient is known, which is the memory chunking saves, so the gradient
        is summed first and the product takes its own pass per chunk. A sharded problem all-reduces
        the gradient before the product, and the product after it."""
        if len(self._grad_terms) > 1:
            gradient = self.grad(w)
            return gradient, self.hvp(w, scale * gradient)
        self.counts.grad += 1
        self.counts.hvp += 1
        gradient, pullback = vjp(self._grad_terms[0], w)
        total = self._total(gradient)[0]
        return total, self._total(pullback(scale * total)[0])[0]

    @property
    def examples(self) -> int | None:
        """The number of examples the loss is the mean of (``from_module``); None for a function."""
        return None if self._examples is None else len(self._examples[0])

    def batch(self, indices: Tensor) -> Problem:
        """The loss of the examples ``indices`` alone, the mean over them (a mini-batch's loss), as a
        problem of its own over the same parameters, chunked as this one is; its evaluations are
        counted in its own ``counts``. Needs a problem made by ``from_module``, not sharded."""
        X, Y, term = self._mini_batches()
        n = len(X)
        indices = torch.as_tensor(indices, device=X.device)
        if indices.ndim != 1 or len(indices) == 0 or indices.is_floating_point():
            raise ConfigError(f"indices must be a non-empty 1-D integer tensor, got {_kind(indices)}")
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= n:
            raise ConfigError(
                f"indices must lie in [0, {n - 1}] (the problem has {n} examples), got values from "
                f"{low} to {high}"
            )
        x, y, size = X[indices], Y[indices], self.info["chunk_size"]
        terms = [term(x[i : i + size], y[i : i + size], len(indices)) for i in range(0, len(x), size)]
        return Problem(terms, self.w0, name=f"{self.name}[batch]", unflatten=self.unflatten, info=self.info)

    def batch_sharpness(
        self,
        w: Tensor,
        batch_size: int,
        batches: int = 1,
        *,
        p_inv: Tensor | float = 1.0,
        l2: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> float:
        """The batch sharpness of "Edge of Stochastic Stability" (Andreyev & Beneventano, arXiv
        2412.20553), E_B[g_Bᵀ H_B g_B / ‖g_B‖²], in the frame of a preconditioned step: the mean
        over ``batches`` mini-batches of ``batch_size`` examples, the first slices of one random
        permutation of the n examples (``generator``; a fixed seed if None), so disjoint as within
        an epoch, and at most n // ``batch_size`` of them: more would repeat examples, and cost more
        than the full data. g_B and H_B are the gradient and the Hessian of the batch's own loss (the
        mean over its examples). Each batch costs one gradient and one HVP on its ``batch_size``
        examples (``batch_size``/n of full-batch ones), counted as one of each in ``counts``. At
        ``batch_size = n`` the one batch is the full data: gᵀHg/‖g‖² of the full-batch loss.

        A step w ← w − P⁻¹g_B (P⁻¹ = ``p_inv``, a number or a diagonal; η for SGD) is gradient
        descent with unit step in the frame x = P^{1/2}w, where the gradient is g̃ = P^{-1/2}g_B and
        the Hessian H̃ = P^{-1/2}H_B P^{-1/2}. The paper's quotient there is

            g̃ᵀH̃g̃ / ‖g̃‖² = (P⁻¹g_B)ᵀ H_B (P⁻¹g_B) / g_Bᵀ P⁻¹ g_B = uᵀH_Bu / uᵀPu,  u = P⁻¹g_B,

        the batch loss's curvature along the step the optimizer takes, per unit of its metric P.
        It is a Rayleigh quotient of P^{-1/2}H_B P^{-1/2}, so at most λ₁(P⁻¹H_B), and on the
        scale of the effective sharpness λ₁(P⁻¹H) of the same P: it compares with the same
        threshold (2 for SGD, 2 + 2β with heavy-ball momentum, (2 + 2β₁)/(1 − β₁) for Adam). For
        SGD it is η·g_BᵀH_Bg_B/‖g_B‖², which the paper finds hovering at 2 (its 2/η) in mini-batch
        training; with ``p_inv = 1`` it is the paper's quantity itself. ``l2`` is SGD's coupled
        weight decay λ: that step descends L_B + λ‖w‖²/2, whose gradient is g_B + λw and whose
        Hessian is H_B + λI.

        A batch whose g_BᵀP⁻¹g_B is zero has no direction and is skipped: NaN if all are."""
        X, _, _ = self._mini_batches()
        n = len(X)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= n:
            raise ConfigError(f"batch_size must be an integer in [1, {n}] (the examples), got {batch_size!r}")
        batches = positive_int("batches", batches)
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        quotients = []
        order = torch.randperm(n, generator=generator)
        for i in range(min(batches, n // batch_size)):
            batch = self.batch(order[i * batch_size : (i + 1) * batch_size])
            if l2:
                # the decay's gradient turns the step: the product is along the turned one
                g = batch.grad(w) + l2 * w
                product = batch.hvp(w, p_inv * g) + l2 * p_inv * g
            else:
                g, product = batch.grad_and_hvp_of_grad(w, p_inv)
            self.counts.add_(batch.counts)
            norm = float(g @ (p_inv * g))
            if norm > 0:
                quotients.append(float((p_inv * g) @ product) / norm)
        return sum(quotients) / len(quotients) if quotients else math.nan

    def _mini_batches(self) -> tuple[Tensor, Tensor, Callable[[Tensor, Tensor, int], Term]]:
        if self._examples is None:
            raise ConfigError(
                f"problem {self.name!r} is not a mean over examples, so it has no mini-batches: make "
                "it with Problem.from_module"
            )
        if self.sharded:
            raise ConfigError("mini-batches of a sharded (distributed) problem are not supported")
        return self._examples

    def third(self, w: Tensor, u: Tensor, v: Tensor) -> Tensor:
        """``∇_w (uᵀ ∇²L(w) v)``, a third-derivative contraction (three reverse passes)."""
        self.counts.third += 1

        def contraction(g):
            return lambda x: torch.dot(u, vjp(g, x)[1](v)[0])

        return self._total(_sum(grad(contraction(g))(w) for g in self._grad_terms))[0]

    def _total(self, *local: Tensor) -> tuple[Tensor, ...]:
        """This rank's sums → the full-batch values (one all-reduce for all of them)."""
        return parallel.all_reduce(*local) if self.sharded else local

    def hessian(self, w: Tensor) -> Tensor:
        """Dense Hessian (d × d) — for tests and tiny problems only."""
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        return torch.stack([self.hvp(w, e) for e in eye])

    def eigs(
        self,
        w: Tensor,
        k: int = 1,
        *,
        v0: Tensor | None = None,
        which: str = "LA",
        tol: float | None = None,
        max_iter: int = MAX_ITER,
        min_iter: int = 1,
        generator: torch.Generator | None = None,
        scale: Tensor | float | None = None,
    ) -> Eigenpairs:
        """Top-``k`` Hessian eigenpairs at ``w`` by Lanczos on HVPs, warm-started from ``v0``. With
        ``scale`` (a number or a diagonal D), those of D∇²L(w)D instead: with D = P^{-1/2} its
        eigenvalues are those of P⁻¹∇²L (the effective sharpness of a preconditioned step), its
        eigenvectors ũ those of the generalized problem HU = PUΛ as u = Dũ (uᵀPu = 1)."""
        if v0 is None:
            v0 = torch.randn(self.dim, dtype=self.dtype, device=self.device, generator=generator)
        if scale is None:
            matvec = lambda v: self.hvp(w, v)  # noqa: E731
        else:
            matvec = lambda v: scale * self.hvp(w, scale * v)  # noqa: E731
        return lanczos(
            matvec,
            v0,
            k,
            which=which,
            tol=tol,
            max_iter=max_iter,
            min_iter=min_iter,
            generator=generator,
        )

    def sharpness(self, w: Tensor) -> float:
        """``λ_max(∇²L(w))`` from a cold start (use ``SharpnessTracker`` inside loops)."""
        gen = torch.Generator(device=self.device).manual_seed(0)
        return float(self.eigs(w, generator=gen).values[0])


class SharpnessTracker:
    """Top Hessian eigenpair along a trajectory, Lanczos warm-started from the last eigenvector.

    ``tol`` is the relative Lanczos residual; the eigenvalue error is about its square over the
    relative gap. On the default digits MLP at the onset of EoS, 1e-4 gave eigenvalues within 2e-7
    (relative) of a tight solve in a median of 14 HVPs, against 22 HVPs for 1e-6
    (``benchmarks/oracle.py``). A small random admixture to the
    warm start keeps Lanczos able to see an eigenvalue that has overtaken the tracked one.
    """

    def __init__(
        self,
        problem: Problem,
        seed: int = 0,
        *,
        tol: float | None = None,
        mix: float = 0.01,
        min_iter: int = 4,
    ) -> None:
        self.problem = problem
        self.gen = torch.Generator(device=problem.device).manual_seed(seed)
        self.tol = tol if tol is not None else tracking_tol(problem.dtype)
        self.mix = mix
        self.min_iter = min_iter
        self.vector: Tensor | None = None

    def __call__(self, w: Tensor, scale: Tensor | float | None = None) -> tuple[float, Tensor]:
        """The top eigenpair at ``w``; with ``scale`` D, of D∇²L(w)D (``Problem.eigs``)."""
        p = self.problem
        noise = torch.randn(p.dim, dtype=p.dtype, device=p.device, generator=self.gen)
        v0 = noise if self.vector is None else self.vector + self.mix * noise / noise.norm()
        pairs = p.eigs(w, v0=v0, tol=self.tol, min_iter=self.min_iter, generator=self.gen, scale=scale)
        self.vector = pairs.vectors[0]
        return float(pairs.values[0]), self.vector


def _check_w0(w0: Tensor) -> None:
    if w0.ndim != 1:
        raise ConfigError(f"w0 must be a 1-D parameter vector, got shape {tuple(w0.shape)}")
    if w0.numel() == 0:
        raise ConfigError("w0 is empty; a problem needs at least one parameter")
    if w0.dtype not in DTYPES.values():
        raise ConfigError(
            f"parameters must be float32 or float64, got {dtype_name(w0.dtype)}; "
            f"pass dtype='float32' or dtype='float64'"
        )
    bad = (~torch.isfinite(w0)).nonzero()
    if len(bad):
        i = int(bad[0])
        raise ConfigError(f"w0 must be finite, got {float(w0[i])} at index {i}")


def _check_loss(fn: Term, w0: Tensor) -> None:
    """One evaluation at ``w0``: a loss that is not a finite scalar would fail deep inside the first
    gradient (or silently sum its entries), far from the mistake."""
    w = w0.clone().requires_grad_(True)
    with torch.enable_grad():
        value = fn(w)
    if not isinstance(value, Tensor):
        raise ConfigError(f"the loss function must return a scalar tensor, got {type(value).__name__}")
    if value.ndim != 0:
        raise ConfigError(f"the loss function must return a scalar tensor, got shape {tuple(value.shape)}")
    if not torch.isfinite(value):
        raise ConfigError(f"the loss function must be finite at w0, got {float(value.detach())}")
    if not value.requires_grad:
        raise ConfigError(
            "the loss function does not depend on w (its value carries no gradient): compute it from "
            "the tensor it is given with torch operations, not from a copy, a float or numpy"
        )


def _kind(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}: {', '.join(type(v).__name__ for v in value)}"
    return type(value).__name__


def _targets(Y: Tensor, sample: Tensor, loss: str) -> Tensor:
    """``Y`` checked against the model's output for one example (``sample``, shape (1, ..., C)):
    integer class indices in [0, C), or float targets of the output's shape (for cross-entropy,
    probabilities: non-negative, summing to 1 over the classes)."""
    classes, position = sample.shape[-1], tuple(sample.shape[1:-1])
    if Y.is_complex() or Y.dtype == torch.bool:
        raise ConfigError(f"targets Y must be class indices or real floats, got {dtype_name(Y.dtype)}")
    if not Y.is_floating_point():
        if tuple(Y.shape[1:]) != position:
            raise ConfigError(
                f"class-index targets Y must have shape (n, {', '.join(map(str, position))}) to match the "
                f"model's output {tuple(sample.shape)}, got {tuple(Y.shape)}".replace("(n, )", "(n,)")
            )
        low, high = int(Y.min()), int(Y.max())
        if low < 0 or high >= classes:
            raise ConfigError(
                f"class-index targets Y must lie in [0, {classes - 1}] (the model has {classes} outputs), "
                f"got values from {low} to {high}"
            )
        return Y
    if tuple(Y.shape[1:]) != tuple(sample.shape[1:]):
        raise ConfigError(
            f"float targets Y must have the model's output shape per example {tuple(sample.shape[1:])}, "
            f"got {tuple(Y.shape[1:])}"
        )
    if loss == "ce":
        total = Y.sum(-1)
        if bool((Y < 0).any()) or not torch.allclose(total, torch.ones_like(total), atol=1e-4):
            raise ConfigError(
                "cross-entropy targets given as floats must be class probabilities (≥ 0, summing to 1 "
                "over the classes); give class indices as an integer tensor"
            )
    return Y


def _sum(parts) -> Tensor:
    it = iter(parts)
    total = next(it)
    for part in it:
        total = total + part
    return total


# Outputs are (m, C) or, for sequence models, (m, positions..., C); an example's loss is the mean over its
# positions, so a sequence task's loss is on the same scale as a classifier's.
def _positions(out: Tensor) -> int:
    return out[0, ..., 0].numel()


def _mse_sum(out: Tensor, y: Tensor) -> Tensor:
    return 0.5 * ((out - y) ** 2).sum() / _positions(out)


def _ce_sum(out: Tensor, y: Tensor) -> Tensor:
    classes = out.shape[-1]
    target = y.reshape(-1, classes) if y.is_floating_point() else y.reshape(-1)
    return F.cross_entropy(out.reshape(-1, classes), target, reduction="sum") / _positions(out)
