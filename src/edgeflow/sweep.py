"""Learning-rate sweeps: GD at several η from one initialization, the classic EoS experiment.

``sweep(problem, [0.1, 0.2, 0.4], steps, out=DIR)`` runs GD and its midpoints (where GD's center
sharpness is measured) at each η, each into its own run directory ``DIR/lr-<η>/`` (streamed,
checkpointed, readable with ``ef.load``), then writes into DIR the per-η table (``sweep.md``,
``sweep.json``) and ``sweep.png``: sharpness against 2/η for every η, and the final loss against η.

With ``optimizer="adam"`` (or any of ``edgeflow.optimizers``) each η runs that optimizer instead, and
its sharpness is Cohen et al. 2022's preconditioned sharpness λ₁(P⁻¹H)/η against threshold/η (38/η
for Adam): the effective sharpness λ₁(P⁻¹H) of the run, whose P⁻¹ includes η, divided by η. For
GD both are the sharpness and 2/η.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeflow import checkpoint, lock
from edgeflow import threads as thread_count
from edgeflow.config import RunConfig
from edgeflow.errors import ConfigError
from edgeflow.metrics import field as flow_field
from edgeflow.metrics import fmt_at, onset_profile, record_steps
from edgeflow.optimizers import DEFAULT as DEFAULT_OPTIMIZER
from edgeflow.optimizers import Optimizer, make_optimizer
from edgeflow.oracle import Problem
from edgeflow.results import Result, load
from edgeflow.rundir import RUN_FILES, check_run_dir, empty_dir
from edgeflow.runner import check_warm_start, compare, resume, writing
from edgeflow.utils import MAX_STEPS, dtype_name, parse_lrs, positive_int
from edgeflow.zoo import is_factory, make_problem, problem_spec

#: GD and its midpoints: GD's loss, and its sharpness measured at the center of its oscillation
FLOWS = ("gd", "midpoint")
#: A loss this many times the initial one counts as divergence. The runner stops a flow only once its
#: loss is non-finite, which GD on digits-mlp at η = 2 reaches at step 101, although its loss passes
#: 10⁵ at step 6; at EoS GD's loss spikes stay far below this (never above its initial value on
#: digits-mlp for η up to 1.6).
BLOWUP = 1e4
#: the sweep's settings and the wall time of each finished η, written as the sweep goes: what
#: ``resume_sweep`` continues from
STATE = "sweep-state.json"
SWEEP_FILES = ("sweep.json", "sweep.md", "sweep.png", STATE)


@dataclass
class SweepResult:
    """``rows``: one dict per η (ascending; keys as in ``sweep.json``); ``results``: η → ``Result``."""

    problem: str
    steps: int
    sharpness_every: int
    seed: int
    rows: list[dict]
    results: dict[float, Result] = field(repr=False)
    out: Path | None = None
    optimizer: str = DEFAULT_OPTIMIZER
    optimizer_options: dict = field(default_factory=dict)
    warm_start: int = 0

    def build_optimizer(self) -> Optimizer:
        """The optimizer of the sweep, at its smallest η."""
        return make_optimizer(self.optimizer, self.rows[0]["lr"], self.optimizer_options)

    @property
    def optimizer_label(self) -> str:
        """``GD``, ``Adam (β₁ = 0.9)``: the title with the hyper-parameters that set the threshold."""
        return self.build_optimizer().label()

    @property
    def threshold_label(self) -> str:
        """``2/η``, ``38/η``: the level S is held against (``threshold(η)/η`` where, as for AdamW, the
        optimizer's threshold depends on η)."""
        levels = {threshold_name(res) for res in self.results.values()}
        return levels.pop() if len(levels) == 1 else "threshold(η)/η"

    def to_dict(self) -> dict:
        keys = ("problem", "steps", "sharpness_every", "seed", "optimizer", "optimizer_options")
        return {
            **{k: getattr(self, k) for k in keys},
            "optimizer_label": self.optimizer_label,
            "warm_start": self.warm_start,
            "threshold_label": self.threshold_label,
            "flows": list(FLOWS),
            "blowup": BLOWUP,
            "rows": self.rows,
        }

    def markdown(self) -> str:
        return sweep_markdown(self.to_dict())


def run_name(lr: float) -> str:
    """The sub-directory of one η: repr is the shortest text that reads back as the same float, so two
    distinct η never share a directory."""
    return f"lr-{lr!r}"


def check_sweep_dir(out: str | Path, lrs: Sequence[float], force: bool) -> Path:
    """Raise ``ConfigError`` unless ``out`` can hold this sweep: not a file, not an earlier sweep
    (unless ``force``), not someone else's non-empty directory; each η's run directory passes
    ``check_run_dir``. Changes nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory")
    if out.is_dir():
        lock.check_free(out)
    entries = sorted(e.name for e in out.iterdir() if e.name != lock.LOCK_FILE) if out.is_dir() else []
    ours = [e for e in entries if e in SWEEP_FILES or _is_run_dir(out / e)]
    foreign = [e for e in entries if e not in ours]
    if foreign:
        raise ConfigError(
            f"{out} holds files that are not part of an edgeflow sweep ({', '.join(foreign[:3])}); "
            "choose another --out"
        )
    if ours and not force:
        raise ConfigError(
            f"{out} already holds a sweep ({', '.join(ours[:4])}); choose another --out "
            "or pass --force to replace it"
        )
    for lr in lrs:
        check_run_dir(out / run_name(lr), force)
    return out


def _is_run_dir(path: Path) -> bool:
    return (
        path.name.startswith("lr-")
        and path.is_dir()
        and not any(e.name not in (*RUN_FILES, "figures", lock.LOCK_FILE) for e in path.iterdir())
    )


def sweep(
    problem: str | Problem,
    lrs: str | Sequence[float],
    steps: int | None = None,
    *,
    out: str | Path | None = None,
    sharpness_every: int | None = None,
    seed: int = 0,
    params: dict | None = None,
    dtype: str | None = None,
    device: str | None = None,
    force: bool = False,
    progress: bool = False,
    say: Callable[[str], None] | None = None,
    threads: int | str | None = None,
    optimizer: str = DEFAULT_OPTIMIZER,
    optimizer_options: dict | None = None,
    warm_start: int = 0,
) -> SweepResult:
    """GD (with its midpoints) at every η in ``lrs`` for ``steps`` steps from the same initialization.

    ``optimizer``, ``optimizer_options`` and ``warm_start`` are those of ``edgeflow.compare``: each η
    runs that optimizer at that η, and the table and figure hold its λ₁(P⁻¹H)/η against its
    threshold/η.

    ``problem`` is a name (built once with ``params``, ``dtype``, ``device`` and ``seed``; ``steps``
    and ``sharpness_every`` default to the problem's) or a ``Problem`` (``steps`` required). With
    ``out`` each η runs in ``out/lr-<η>/`` and ``sweep.json``, ``sweep.md`` and ``sweep.png`` are
    written; ``force`` replaces an earlier sweep there. Everything is validated before anything is
    computed. ``say`` receives one line per η as its run ends; ``progress`` shows a bar per run.
    A run counts as diverged once GD's loss is non-finite or above ``BLOWUP`` × its initial value.
    ``threads`` sets torch's thread count once the problem is built (a number, or ``"auto"``: see
    ``edgeflow.threads.choose``); None keeps it.
    """
    lrs = parse_lrs(lrs)
    built = isinstance(problem, Problem)
    if built and (params or dtype is not None or device is not None):
        raise ConfigError("params, dtype and device build a named problem; a Problem is already built")
    spec = None if built or is_factory(problem) else problem_spec(problem)
    if steps is None and spec is None:
        raise ConfigError("steps is required unless the problem is a named one (which has a default)")
    steps = positive_int("steps", steps if steps is not None else spec.steps, at_most=MAX_STEPS)
    default_every = spec.sharpness_every if spec else 1
    every = positive_int("sharpness_every", sharpness_every if sharpness_every is not None else default_every)
    for lr in lrs:  # each run's own checks, before anything is written
        opt = make_optimizer(optimizer, lr, optimizer_options)
    warm_start = check_warm_start(warm_start)
    if out is not None:
        out = check_sweep_dir(out, lrs, force)
    name = None if built else problem
    settings = {"problem": name, "lrs": lrs, "steps": steps, "sharpness_every": every, "seed": seed}
    settings |= {"optimizer": opt.name, "optimizer_options": opt.options(), "warm_start": warm_start}
    # as text, so that they go into sweep-state.json (a torch.dtype or torch.device would not)
    text_dtype = dtype if dtype is None or isinstance(dtype, str) else dtype_name(dtype)
    settings |= {"params": dict(params or {}), "dtype": text_dtype, "device": device and str(device)}
    held = writing(out, "edgeflow sweep", create=True) if out is not None else contextlib.nullcontext()
    with held:
        if out is not None:
            check_sweep_dir(out, lrs, force)  # again, now that no other writer can change it
        if not built:
            problem = make_problem(name, dtype=dtype, device=device, seed=seed, **(params or {}))
        thread_count.use(threads, problem.dim)
        if out is not None and force:  # only now that nothing is left to validate; η not swept now go too
            empty_dir(out)
        return _run_all(problem, settings, out, progress, say, {}, resuming=False)


def resume_sweep(
    out: str | Path,
    problem: Problem | None = None,
    *,
    progress: bool = False,
    say: Callable[[str], None] | None = None,
    threads: int | str | None = None,
) -> SweepResult:
    """Finish the sweep in ``out`` that was interrupted or killed: every η whose run completed is read
    back, an interrupted one resumes from its own checkpoint (bit for bit), one never started (or
    stopped before its first checkpoint) runs from the start; then the table and figure are written.
    A named problem is rebuilt from the sweep's settings; a ``Problem`` built by hand is passed again."""
    out = Path(out)
    state = read_state(out)
    settings, walls = state["settings"], state["walls"]
    with writing(out, "edgeflow sweep --resume"):
        if problem is None:
            if settings["problem"] is None:
                raise ConfigError(
                    f"the sweep in {out} ran on a Problem built by hand; pass it again: problem=..."
                )
            problem = make_problem(
                settings["problem"],
                dtype=settings["dtype"],
                device=settings["device"],
                seed=settings["seed"],
                **settings["params"],
            )
        thread_count.use(threads, problem.dim)
        return _run_all(problem, settings, out, progress, say, walls, resuming=True)


def read_state(out: Path) -> dict:
    """The settings a sweep directory was started with (``ConfigError`` when it holds no sweep)."""
    if not out.is_dir():
        what = "is a file" if out.exists() else "does not exist"
        raise ConfigError(f"{out} {what}; --resume takes a directory written by `edgeflow sweep`")
    path = out / STATE
    if not path.is_file():
        raise ConfigError(f"{out} holds no resumable edgeflow sweep (no {STATE})")
    try:
        state = json.loads(path.read_text())
        settings = state["settings"]
        settings["lrs"] = parse_lrs(settings["lrs"])
        for key, value in {"optimizer": DEFAULT_OPTIMIZER, "optimizer_options": {}, "warm_start": 0}.items():
            settings.setdefault(key, value)  # a sweep from before the optimizer option ran GD
        return state
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path} is damaged ({type(err).__name__}: {err})") from None


def _write_state(out: Path, settings: dict, walls: dict[str, float]) -> None:
    tmp = out / (STATE + ".tmp")
    tmp.write_text(json.dumps({"settings": settings, "walls": walls}, indent=2) + "\n")
    tmp.replace(out / STATE)


def _run_all(
    problem: Problem,
    settings: dict,
    out: Path | None,
    progress: bool,
    say: Callable[[str], None] | None,
    walls: dict[str, float],
    resuming: bool,
) -> SweepResult:
    """Every η of ``settings`` in turn; ``resuming`` an earlier attempt, the runs it finished are read
    back (their wall times from ``walls``) and an interrupted one is resumed."""
    name, steps, every, seed = (settings[k] for k in ("problem", "steps", "sharpness_every", "seed"))
    optimizer = {k: settings[k] for k in ("optimizer", "optimizer_options", "warm_start")}
    if out is not None:
        _write_state(out, settings, walls)
    rows, results = [], {}
    for lr in settings["lrs"]:
        sub = out / run_name(lr) if out is not None else None
        t0 = time.perf_counter()
        if resuming and sub is not None and _finished(sub):
            res = load(sub)
            wall = walls.get(run_name(lr))
        elif resuming and sub is not None and (sub / checkpoint.CHECKPOINT).is_file():
            res = resume(sub, problem, progress=progress)
            wall = time.perf_counter() - t0
        else:
            files = None
            if name:
                files = {"config.toml": _run_toml(name, problem, lr, settings)}
            res = compare(
                problem,
                lr,
                steps,
                FLOWS,
                sharpness_every=every,
                seed=seed,
                **optimizer,
                out=sub,
                force=resuming,  # an η that stopped before its first checkpoint starts again
                files=files,
                progress=progress,
            )
            wall = time.perf_counter() - t0
        if out is not None and run_name(lr) not in walls:
            walls[run_name(lr)] = wall
            _write_state(out, settings, walls)
        row = {**sweep_row(res, wall), "run_dir": sub.name if sub else None}
        rows.append(row)
        results[lr] = res
        if say is not None:
            say(progress_line(row, steps, threshold_name(res)))
    result = SweepResult(problem.name, steps, every, seed, rows, results, out, **optimizer)
    if out is not None:
        write_sweep(result, out)
    return result


def _finished(run_dir: Path) -> bool:
    """A run that reached its last step: its checkpoint dropped, its file marked complete."""
    if (run_dir / checkpoint.CHECKPOINT).exists() or not (run_dir / "results.h5").is_file():
        return False
    return load(run_dir, params=False).complete


def _run_toml(name: str, problem: Problem, lr: float, sweep_settings: dict) -> str:
    """The settings of one η's run: ``edgeflow run --config DIR/lr-<η>/config.toml`` repeats it."""
    keys = ("steps", "seed", "sharpness_every", "params", "optimizer", "optimizer_options", "warm_start")
    settings = {k: sweep_settings[k] for k in keys} | {"problem": name, "lr": lr, "flows": list(FLOWS)}
    settings |= {"device": str(problem.device), "dtype": dtype_name(problem.dtype), "record_every": 1}
    return RunConfig.merged(settings).to_toml()


def diverged_at(res: Result) -> int | None:
    """The first step at which GD's loss blew up (above ``BLOWUP`` × its initial value) or the run
    stopped on a non-finite value; None when GD ran on."""
    stops = [res[f].info.get("diverged_at") for f in FLOWS]
    steps, loss = record_steps(res["gd"]), flow_field(res["gd"], "train_loss")
    if loss.size and math.isfinite(loss[0]) and loss[0] > 0:  # a relative blow-up needs a positive start
        blown = np.flatnonzero(~(loss <= BLOWUP * loss[0]))
        stops.append(int(steps[blown[0]]) if blown.size else None)
    return min((s for s in stops if s is not None), default=None)


def center_sharpness(res: Result) -> tuple[np.ndarray, np.ndarray, float]:
    """The midpoints' steps, their sharpness S and the threshold S is held against: for GD the
    sharpness against 2/η; for another optimizer λ₁(P⁻¹H)/η against threshold/η. The run's P⁻¹
    includes η, which makes its threshold a constant (38 for Adam); without it S is Cohen et al.
    2022's preconditioned sharpness, whose level falls as η grows, as in their figures."""
    rec = res["midpoint"]
    if not res.preconditioned:
        return record_steps(rec), flow_field(rec, "sharpness"), res.threshold
    return record_steps(rec), flow_field(rec, "effective_sharpness") / res.lr, res.threshold / res.lr


def _optimizer_threshold(res: Result) -> float:
    """The optimizer's threshold on λ₁(P⁻¹H): 2 for GD."""
    return res.threshold if res.preconditioned else 2.0


def threshold_name(res: Result) -> str:
    """``2/η``, ``38/η``: how the table and the figure name S's threshold."""
    return f"{_optimizer_threshold(res):.4g}/η"


def sweep_row(res: Result, wall_time: float | None) -> dict:
    """One η's line of the table, from the loss of flow ``gd`` and its midpoints' sharpness S
    (``center_sharpness``; JSON-ready: no NaN)."""
    k_div = diverged_at(res)
    steps, s, threshold = center_sharpness(res)
    if k_div is not None:  # after a blow-up the "sharpness" is that of a meaningless point
        s = np.where(steps < k_div, s, np.nan)
    onset = onset_profile(steps, s, threshold)
    finite = np.flatnonzero(np.isfinite(s))
    gd_steps, loss = record_steps(res["gd"]), flow_field(res["gd"], "train_loss")
    ok = np.flatnonzero(np.isfinite(loss))
    total = res.config.get("steps") or (int(steps[-1]) if steps.size else 0)
    late = s[(steps >= 0.75 * total) & np.isfinite(s)]
    return {
        "lr": res.lr,
        "threshold": threshold,
        "initial_sharpness": _num(s[finite[0]]) if finite.size else None,
        "cross_step": onset["cross"],
        "peak_step": onset["peak_step"],
        "peak_sharpness": _num(onset["peak"]),
        "last_loss": _num(loss[ok[-1]]) if ok.size else None,
        "last_loss_step": int(gd_steps[ok[-1]]) if ok.size else None,
        "last_sharpness": _num(s[finite[-1]]) if finite.size else None,
        "last_sharpness_step": int(steps[finite[-1]]) if finite.size else None,
        # how close the run sits to its threshold at the end: ≈ 1 at EoS, < 1 while it has not reached it
        "late_sharpness_ratio": _num(np.median(late) / threshold) if late.size else None,
        "diverged_at": k_div,
        "wall_time_s": None if wall_time is None else round(wall_time, 3),
    }


def _num(x: object) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def progress_line(row: dict, steps: int, level: str = "2/η") -> str:
    """``η = 0.1: 300 steps, crossed 2/η = 20 at step 120`` (or where it stayed, or where it diverged);
    ``level`` names the threshold."""
    head = f"η = {row['lr']:g}: "
    if row["diverged_at"] is not None:
        return head + f"diverged at step {row['diverged_at']}"
    cross, t = row["cross_step"], f"{level} = {fmt_level(row['threshold'], 4)}"
    if cross is None:
        return head + f"{steps} steps, sharpness stayed below {t}"
    if cross == 0:
        return head + f"{steps} steps, sharpness started above {t}"
    return head + f"{steps} steps, crossed {t} at step {cross}"


def write_sweep(result: SweepResult, out: str | Path) -> list[Path]:
    """``sweep.json`` (strict JSON: undefined values are null), ``sweep.md`` and ``sweep.png``."""
    out = Path(out)
    summary = result.to_dict()
    (out / "sweep.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    (out / "sweep.md").write_text(sweep_markdown(summary))
    return [out / "sweep.json", out / "sweep.md", plot_sweep(result, out / "sweep.png")]


def columns(level: str = "2/η") -> list[tuple[str, str, str | None]]:
    """The table's (heading, key, key of its step) with the threshold named ``level``."""
    return [
        ("η", "lr", None),
        (level, "threshold", None),
        ("initial S", "initial_sharpness", None),
        (f"crosses {level}", "cross_step", None),
        ("first peak (step)", "peak_sharpness", "peak_step"),
        ("last loss (step)", "last_loss", "last_loss_step"),
        ("last S (step)", "last_sharpness", "last_sharpness_step"),
        (f"late S / ({level})", "late_sharpness_ratio", None),
        ("diverged at", "diverged_at", None),
        ("wall (s)", "wall_time_s", None),
    ]


def sweep_markdown(summary: dict) -> str:
    level, name = summary["threshold_label"], summary["optimizer"]
    warm = f", each η after {summary['warm_start']} warm-start steps" if summary["warm_start"] else ""
    if name == DEFAULT_OPTIMIZER:
        run, s, who = "GD", "sharpness at GD's midpoints", "GD's"
    else:
        hyper = ", ".join(f"{k}={v}" for k, v in summary["optimizer_options"].items())
        run, who = f"{name} ({hyper})", "the run's"
        s = f"λ₁(P⁻¹H)/η at its midpoints, P⁻¹ the step's (η included), against {level}"
    cols = columns(level)
    lines = [
        f"Learning-rate sweep on {summary['problem']}: {run} for {summary['steps']} steps from the same "
        f"initialization{warm}; S = {s}, {_every(summary['sharpness_every'])}",
        "",
        "| " + " | ".join(c for c, _, _ in cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    for row in summary["rows"]:
        cells = [fmt_at(row[key], row[at] if at else None) for _, key, at in cols]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"crosses {level}: first measured step with S ≥ {level} (0: it started above); late S / ({level}): "
        f"median S over the last quarter of the run (≈ 1 at the edge of stability); diverged: {who} loss "
        f"non-finite or above {summary['blowup']:g}× its initial value.",
    ]
    return "\n".join(lines) + "\n"


def _every(n: int) -> str:
    return "measured every step" if n == 1 else f"measured every {n} steps"


# ---------------------------------------------------------------------------------------- figure
def plot_sweep(result: SweepResult, path: str | Path) -> Path:
    """Left: the midpoints' sharpness S over the steps for every η, each with its own threshold line
    (``center_sharpness``: GD's sharpness against 2/η, another optimizer's λ₁(P⁻¹H)/η against
    threshold/η, Cohen et al. 2022's figure); right: the final loss against η, each diverged η marked
    with a red × at the top of the axis. In the style of every figure of the package
    (``edgeflow.plots.paper_style``)."""
    import matplotlib.pyplot as plt

    from edgeflow.plots import add_caption, new_figure, paper_style, save_figure

    n = len(result.rows)
    # viridis without its palest end, which vanishes on white
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, n) if n > 1 else [0.4])
    gd, label, level = result.optimizer == DEFAULT_OPTIMIZER, result.optimizer_label, result.threshold_label
    warm = f", after {result.warm_start} warm-start steps" if result.warm_start else ""
    midpoint = "$w^*_k = \\frac{1}{4}(w_{k-1} + 2w_k + w_{k+1})$"
    with paper_style():
        fig, axes = new_figure(1, 2, panel=(4.8, 3.6), extra_height=0.8)
        left, right = axes[0]
        _plot_sharpness(left, result, colors)
        _plot_final_loss(right, result, colors)
        heading = f"{result.problem}: full-batch {label} at {n} learning rates, {result.steps} steps"
        fig.suptitle(heading + warm)
        if gd:
            text = (
                f"S: top Hessian eigenvalue at GD's midpoint {midpoint}; GD is stable while S < 2/η "
                "(dashed, one line per η). ×: where GD diverged (its loss "
            )
        else:
            title = result.build_optimizer().title
            text = (
                f"S = λ₁(P⁻¹H)/η: top eigenvalue of the Hessian H preconditioned by {title}'s step "
                "$w_{k+1} = w_k - P^{-1}d_k$, divided by η, which P⁻¹ includes: the preconditioned "
                f"sharpness of Cohen et al. 2022, at the midpoint {midpoint} with the state of step k. "
                f"{_capital(title)} is stable while S < {level} (dashed, one line per η). "
                f"×: where {title} "
                "diverged (its loss "
            )
        add_caption(fig, text + f"non-finite or above {BLOWUP:g}× the initial loss).")
        return save_figure(fig, path)


def _sharpness_before_divergence(result: SweepResult, row: dict) -> tuple[np.ndarray, np.ndarray]:
    """Finite, positive (log axis) S of one η, up to its divergence."""
    steps, s, _ = center_sharpness(result.results[row["lr"]])
    keep = np.isfinite(s) & (s > 0)
    if row["diverged_at"] is not None:
        keep &= steps < row["diverged_at"]
    return steps[keep], s[keep]


def _plot_sharpness(ax, result: SweepResult, colors) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    from edgeflow.plots import add_legend, finish_axes

    rows, level = result.rows, result.threshold_label
    curves = [_sharpness_before_divergence(result, row) for row in rows]
    # The y-range holds every 2/η and the runs that ran on; a diverging run's blow-up is clipped.
    # Log scale: a sweep's η are usually spaced geometrically, and so then are their 2/η lines.
    held = [row["threshold"] for row in rows]
    held += [
        float(s.max()) for (_, s), row in zip(curves, rows, strict=True) if s.size and not row["diverged_at"]
    ]
    top, bottom = 1.2 * max(held), min([*held] + [float(s.min()) for _, s in curves if s.size]) / 1.2
    for row, (steps, s), color in zip(rows, curves, colors, strict=True):
        dot = {"marker": "o", "ms": 3} if s.size == 1 else {}  # a run that diverged before step 2·every
        ax.plot(steps, np.minimum(s, top), color=color, lw=1.5, label=f"η = {row['lr']:g}", **dot)
        ax.axhline(row["threshold"], color=color, lw=1.0, ls="--")
        # in the margin right of the axis, where no curve runs
        ax.annotate(
            f"{level} = {fmt_level(row['threshold'])}",
            (1.0, row["threshold"]),
            xycoords=("axes fraction", "data"),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            color=color,
            fontsize=8,
        )
        if row["diverged_at"] is not None:
            y = min(float(s[-1]), top) if s.size else top
            ax.plot([row["diverged_at"]], [y], "x", color="tab:red", ms=8, mew=2, clip_on=False)
    ax.set_yscale("log")
    ax.set_ylim(bottom, top)
    ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 3, 5, 7)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_xlim(0, result.steps)
    if result.optimizer == DEFAULT_OPTIMIZER:
        finish_axes(
            ax,
            title="Sharpness against 2/η (dashed)",
            xlabel="step k (GD iterations)",
            ylabel="sharpness at GD's midpoint  S = λ_max(∇²L)",
        )
        add_legend(ax, ncols=min(len(rows), 4))
        return
    finish_axes(
        ax,
        title=f"Preconditioned sharpness against {level} (dashed)",
        xlabel=f"step k ({result.build_optimizer().title} iterations)",
        ylabel="S = λ₁(P⁻¹H)/η at the midpoint",
    )
    label = f"λ₁(P⁻¹H)/η, {result.optimizer_label}: threshold {level}"
    add_legend(ax, ncols=min(len(rows), 4), title=label)


def _capital(title: str) -> str:
    """``heavy-ball momentum`` → ``Heavy-ball momentum``, at the start of a sentence (GD stays GD)."""
    return title[:1].upper() + title[1:]


def fmt_level(x: float, digits: int = 3) -> str:
    """A threshold to ``digits`` significant digits, 38000 rather than 3.8e+04 (Adam's 38/η at η = 0.001)."""
    return f"{float(f'{x:.{digits}g}'):.0f}" if 1e3 <= x < 1e6 else f"{x:.{digits}g}"


def _plot_final_loss(ax, result: SweepResult, colors) -> None:
    from matplotlib.transforms import blended_transform_factory

    from edgeflow.plots import add_legend, finish_axes

    lrs = [row["lr"] for row in result.rows]
    ran = [
        (row["lr"], row["last_loss"], color)
        for row, color in zip(result.rows, colors, strict=True)
        if row["diverged_at"] is None and row["last_loss"] is not None and row["last_loss"] > 0
    ]
    # every η starts from the same point (after a warm start, each from its own: the smallest η's is
    # shown): its loss is the reference for the final ones
    first = flow_field(result.results[lrs[0]]["gd"], "train_loss")[:1]
    start = float(first[0]) if first.size and np.isfinite(first[0]) and first[0] > 0 else None
    ref = [loss for _, loss, _ in ran] + ([start] if start is not None else [])
    if start is not None:
        text = f"loss after η = {lrs[0]:g}'s warm start" if result.warm_start else "initial loss"
        ax.axhline(start, color="0.5", lw=0.8, ls=":", label=f"{text} {start:.3g}")
    if len(ran) > 1:
        ax.plot([x for x, _, _ in ran], [y for _, y, _ in ran], color="0.6", lw=1.0, zorder=2)
    for x, y, color in ran:
        ax.plot([x], [y], "o", color=color, ms=7, zorder=3)
    # Limits set by hand, not autoscaled: finite whatever was drawn, with room above the data for
    # the marks of the η that diverged.
    lo, hi = (min(ref), max(ref)) if ref else (0.1, 10.0)
    ax.set_yscale("log")
    ax.set_ylim(lo / 3, hi * (30 if len(ran) < len(result.rows) else 3))
    ax.set_xscale("log")
    ax.set_xlim(min(lrs) / 1.5, max(lrs) * 1.5)
    ax.set_xticks(lrs, [f"{x:g}" for x in lrs])
    ax.minorticks_off()
    at_top = blended_transform_factory(ax.transData, ax.transAxes)
    for row in result.rows:
        if row["diverged_at"] is not None:
            ax.plot([row["lr"]], [0.95], "x", color="tab:red", ms=10, mew=2.5, transform=at_top)
            text = f"diverged\nat step {row['diverged_at']}"
            ax.text(
                row["lr"], 0.9, text, transform=at_top, ha="center", va="top", color="tab:red", fontsize=8
            )
    if not ref:
        ax.text(0.5, 0.5, "no finite final loss", transform=ax.transAxes, ha="center", color="0.4")
    finish_axes(
        ax,
        title="Final loss against η",
        xlabel="learning rate η",
        ylabel=f"{_capital(result.build_optimizer().title)}'s training loss at step {result.steps}",
    )
    add_legend(ax)


__all__ = [
    "BLOWUP",
    "SweepResult",
    "parse_lrs",
    "plot_sweep",
    "resume_sweep",
    "sweep",
    "sweep_markdown",
    "write_sweep",
]
