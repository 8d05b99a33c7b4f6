"""Mini-batch training: what the full-batch effective sharpness and the batch sharpness forecast of the
full-batch loss's spikes → docs/minibatch.md and docs/minibatch.json.

    python benchmarks/minibatch.py [--problems digits-mlp,mnist5k-cnn] [--optimizers sgd,adam]
                                   [--batch-sizes full,256,128,64,32] [--steps 300]
                                   [--reuse docs/minibatch.json] [--rescore]

Each run trains the zoo problem's ``nn.Module`` on its first ``N[problem]`` examples (``n``) with a
real ``torch.optim`` optimizer (``SGD`` without momentum, or ``Adam`` at torch's defaults) on
mini-batches of ``batch_size`` examples, reshuffled every epoch (batch sizes ≥ n are dropped;
``full`` is n), for ``steps + horizon`` steps. After every step the benchmark evaluates the full-batch
training loss (every step: spikes are judged on it) and one ``StabilityMonitor.for_optimizer`` on the
full data with ``batch_size`` set updates, for the first ``steps`` steps. Seven signals are scored
against the same spikes, two read from the full-batch effective sharpness and five from the batch
sharpness:

* **monitor**: the monitor's own ``warning`` (its forecast from the full-batch effective sharpness a =
  λ₁(P⁻¹H) and the tracked oscillation, at its defaults);
* **a ≥ threshold**: the plainest rule on the full-batch signal: a at its last measurement (the
  monitor's adaptive schedule) at or above the optimizer's threshold;
* **batch sharpness (statistic of k)**: ``edgeflow.monitor.batch_sharpness_warning``: the mean or
  the median of the last k measurements of batch sharpness / threshold at least 1, the batch
  sharpness measured every ``BATCH_EVERY`` steps over ``BATCHES`` batches of the training batch size
  (the monitor's ``batch_sharpness``). One measurement is a mean over a few random batches, noisy at
  the edge, and some are far off (Adam's first, whose P is one batch's gradient; those of a run
  whose parameters blow up): a window trades lead for precision, a median ignores the odd outlier.
  One measurement, and the mean and the median of 4 and of 10 are scored; the monitor's default
  (``BATCH_STATISTIC`` of ``BATCH_WINDOW``) is the variant whose recall and precision together (F1)
  were best over the mini-batch runs of both optimizers when this benchmark was first run, and the
  conclusion lists each variant's F1, so a rerun shows whether it still is.

Spikes and scores are ``benchmarks/forecasts.py``'s: a spike is the first step of an episode of
full-batch losses above 1.2× the running minimum (ending under 1.1×) or a divergence, spikes in the
first 5 steps not counted; recall = spikes warned 5–100 steps ahead / spikes; precision = warnings
followed by a spike within the horizon / warnings; silent = quiet runs without a warning. Overhead:
each signal's oracle calls per training step in full-batch gradients (an HVP as 2, a third-derivative
contraction as 3, a loss as 0.5, each scaled by its examples / n) and as a multiple of the training
step's own gradient (batch_size examples). "Better" in the conclusion is the higher F1 (the harmonic
mean of recall and precision) over an optimizer's mini-batch runs (batch size < n).

The raw series (full-batch losses, the monitor's warnings, a and the batch sharpness at their
measurements) are stored in the JSON, so ``--rescore`` redraws the tables from it without training.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import edgeflow as ef
from edgeflow.monitor import (
    BATCH_EVERY,
    BATCH_STATISTIC,
    BATCH_STATISTICS,
    BATCH_WINDOW,
    BATCHES,
    batch_sharpness_warning,
)
from edgeflow.oracle.problem import HVP_GRADIENTS, LOSS_GRADIENTS, THIRD_GRADIENTS
from edgeflow.utils import positive_int
from edgeflow.zoo import models, vision
from edgeflow.zoo.network import image_classifier
from edgeflow.zoo.registry import PROBLEMS

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("forecasts", ROOT / "benchmarks" / "forecasts.py")
forecasts = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(forecasts)
GRADIENT_AND_HVP = 1.0 + HVP_GRADIENTS  # one batch of batch sharpness

#: batch-sharpness rules scored, (window, statistic): one measurement, and each statistic over 4 and 10
#: (the monitor's default among them)
VARIANTS = [(1, "mean")] + [(window, statistic) for window in (4, 10) for statistic in BATCH_STATISTICS]
OPTIMIZERS = ("sgd", "adam")
#: η per optimizer and problem, from docs/forecasts.md's grids by 300-step full-batch runs at these n:
#: the first where full-batch training stays quiet, the second where it first spikes at the edge of
#: stability, the third further past it
GRIDS = {
    "sgd": {"digits-mlp": [0.2, 0.8, 1.6], "mnist5k-cnn": [0.05, 0.2, 0.4]},
    "adam": {"digits-mlp": [0.0015, 0.0075, 0.03], "mnist5k-cnn": [0.0025, 0.01, 0.04]},
}
#: examples per problem: 1024 digits; 512 MNIST images, where a full-batch CNN step on one core takes
#: a quarter of a second at 1024 (the default n of the zoo's CPU-sized CNN is 128, too few for batches)
N = {"digits-mlp": 1024, "mnist5k-cnn": 512}
#: the architecture of each problem at the zoo's CPU sizes, on its data set (any n)
NETWORKS = {
    "digits-mlp": vision._digits_mlp,  # the zoo's own descriptions (network, data), any n
    "mnist5k-cnn": image_classifier(vision._mnist5k, vision._cnn),
}


def network(problem: str, n: int, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The zoo problem's network (its seeded initialization) and its first ``n`` examples, in the
    problem's dtype, with one-hot targets for the MSE loss the zoo trains with."""
    if problem not in NETWORKS:
        raise ef.ConfigError(f"unknown problem {problem!r}; valid choices: {', '.join(NETWORKS)}")
    spec = PROBLEMS[problem]
    params = {k: v for k, v in spec.params.items() if k != "n"}
    make, (X, y) = NETWORKS[problem](seed=seed, n=n, **params)
    dtype = getattr(torch, spec.dtype)
    model = models.seeded_init(make, seed).to(dtype)
    return model, X.to(dtype), F.one_hot(y.long(), int(y.max()) + 1).to(dtype)


def make_optimizer(name: str, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr)
    raise ef.ConfigError(f"unknown optimizer {name!r}; valid choices: {', '.join(OPTIMIZERS)}")


def train(problem: str, optimizer: str, lr: float, batch_size: int, n: int, steps: int, horizon: int) -> dict:
    """One mini-batch run with the monitor (``batch_size`` set) in the loop: the raw series."""
    model, X, Y = network(problem, n)
    opt = make_optimizer(optimizer, model, lr)
    mon = ef.StabilityMonitor.for_optimizer(opt, model, (X, Y), horizon=horizon, batch_size=batch_size)
    order = torch.Generator().manual_seed(1)
    batches: list[torch.Tensor] = []
    losses, warned, sharpness, batch, diverged = [], [], [], [], None
    wall_monitor, t0 = 0.0, time.perf_counter()
    for k in range(steps + horizon):
        with torch.no_grad():
            losses.append(float(0.5 * ((model(X) - Y) ** 2).sum() / n))
        if not math.isfinite(losses[-1]):
            losses[-1], diverged = math.inf, k
            break
        if k > 0 and k <= steps:  # the monitor sees the iterate after each step
            tm = time.perf_counter()
            try:
                rep = mon.update()
            except FloatingPointError:
                losses[-1], diverged = math.inf, k
                break
            wall_monitor += time.perf_counter() - tm
            if rep["warning"]:
                warned.append(k)
            if math.isfinite(rep["effective_sharpness"]):
                sharpness.append((k, rep["effective_sharpness"] / rep["threshold"]))
            if math.isfinite(rep["batch_sharpness"]):
                batch.append((k, rep["batch_sharpness"] / rep["threshold"]))
        if not batches:
            batches = list(torch.randperm(n, generator=order).split(batch_size))
        idx = batches.pop(0)
        opt.zero_grad()
        (0.5 * ((model(X[idx]) - Y[idx]) ** 2).sum() / len(idx)).backward()
        opt.step()
    counts = mon.problem.counts
    monitored = max(min(steps, len(losses) - 1), 1)
    # the batch sharpness takes a gradient and an HVP per batch on batch_size examples (the full-batch
    # monitor takes no gradient); the rest is the full-batch monitor's, on all n
    batch_cost = GRADIENT_AND_HVP * counts.grad * batch_size / n
    full_cost = (
        HVP_GRADIENTS * (counts.hvp - counts.grad)
        + THIRD_GRADIENTS * counts.third
        + LOSS_GRADIENTS * counts.loss
    )
    return {
        "n": n,
        "losses": [round(x, 7) if math.isfinite(x) else x for x in losses],
        "monitor_warnings": warned,
        "sharpness": sharpness,
        "batch_sharpness": batch,
        "diverged_at": diverged,
        "monitored_steps": monitored,
        "overhead": {"full": full_cost / monitored, "batch": batch_cost / monitored},
        "wall_vs_training": wall_monitor / max(time.perf_counter() - t0 - wall_monitor, 1e-12),
    }


def variant(window: int, statistic: str) -> str:
    """A batch-sharpness rule's name in the tables."""
    if window == 1:
        return "batch sharpness (one measurement)"
    return f"batch sharpness ({statistic} of {window})"


def rule_warnings(
    series: list[tuple[int, float]], window: int, steps: int, statistic: str = "mean"
) -> list[int]:
    """The steps 1..``steps`` at which ``batch_sharpness_warning`` over the measured ratios so far
    (``series``: (step, value / threshold)) warns, each measurement holding until the next."""
    warned, seen, at = [], [], 0
    for k in range(1, steps + 1):
        while at < len(series) and series[at][0] <= k:
            seen.append(series[at][1])
            at += 1
        if batch_sharpness_warning(seen, window, statistic):
            warned.append(k)
    return warned


def signals(run: dict, steps: int, horizon: int) -> dict[str, dict]:
    """Each signal's score on the run (``forecasts.score``) with its overhead in full gradients."""
    losses = np.array(run["losses"], dtype=float)
    monitored = run["monitored_steps"]
    warnings = {
        "monitor": (run["monitor_warnings"], run["overhead"]["full"]),
        "a ≥ threshold": (rule_warnings(run["sharpness"], 1, monitored), run["overhead"]["full"]),
    }
    for window, statistic in VARIANTS:
        warned = rule_warnings(run["batch_sharpness"], window, monitored, statistic)
        warnings[variant(window, statistic)] = (warned, run["overhead"]["batch"])
    scored = {}
    for name, (warned, overhead) in warnings.items():
        scored[name] = forecasts.score(losses, warned, steps, horizon)
        scored[name].update(monitored_steps=monitored, overhead=overhead)
    return scored


#: an F1 under this forecasts nothing worth a warning: the conclusion says neither signal works
USEFUL = 0.3
#: a median of batch sharpness / threshold this close to 1 hovers at the threshold
HOVER = 0.1
#: the signals read from the full-batch effective sharpness
FULL_BATCH_SIGNALS = ("monitor", "a ≥ threshold")


def chosen() -> str:
    return variant(BATCH_WINDOW, BATCH_STATISTIC)


def f1(t: dict) -> float:
    recall, precision = t["recall"] or 0.0, t["precision"] or 0.0
    return 2 * recall * precision / (recall + precision) if recall + precision else 0.0


def summary(results: dict, steps: int, horizon: int) -> dict:
    """Totals (``forecasts.totals`` with F1) per optimizer × problem × batch size × signal; per optimizer
    over its mini-batch runs (batch size < n) and its full-batch ones; per optimizer and batch size
    (``full`` or the size) over problems. And per optimizer and batch size, the medians of batch
    sharpness / threshold and of the full-batch a / threshold over the last two thirds of the
    monitored steps of the runs at each problem's middle η (where full-batch training reaches the
    edge of stability): whether the batch sharpness hovers at the threshold, as the paper finds."""
    table: dict = {}
    pooled: dict = {}
    by_size: dict = {}
    hover: dict = {}
    for key, run in results["runs"].items():
        optimizer, problem, size, lr = key.split("|")
        label = "full" if int(size) >= run["n"] else size
        scope = "full batch" if label == "full" else "mini-batch"
        for name, row in signals(run, steps, horizon).items():
            for group in (
                table.setdefault(optimizer, {}).setdefault(problem, {}).setdefault(size, {}),
                pooled.setdefault(optimizer, {}).setdefault(scope, {}),
                by_size.setdefault(optimizer, {}).setdefault(label, {}),
            ):
                group.setdefault(name, []).append(row)
        if float(lr) == GRIDS[optimizer][problem][1]:
            late = hover.setdefault(optimizer, {}).setdefault(label, {"batch": [], "a": []})
            late["batch"] += [r for k, r in run["batch_sharpness"] if k > steps // 3]
            late["a"] += [r for k, r in run["sharpness"] if k > steps // 3]

    def total(rows: dict) -> dict:
        return {name: {**forecasts.totals(r), "f1": f1(forecasts.totals(r))} for name, r in rows.items()}

    def median(values: list[float]) -> float | None:
        return float(np.median(values)) if values else None

    return {
        "table": {
            o: {p: {s: total(rows) for s, rows in sizes.items()} for p, sizes in problems.items()}
            for o, problems in table.items()
        },
        "pooled": {o: {scope: total(rows) for scope, rows in scopes.items()} for o, scopes in pooled.items()},
        "by_size": {o: {size: total(rows) for size, rows in sizes.items()} for o, sizes in by_size.items()},
        "hover": {
            o: {size: {k: median(v) for k, v in late.items()} for size, late in sizes.items()}
            for o, sizes in hover.items()
        },
    }


def _sizes(sizes: dict) -> list[str]:
    """Batch-size labels from the full batch down."""
    return sorted(sizes, key=lambda size: -math.inf if size == "full" else -int(size))


def conclusion(s: dict) -> list[str]:
    """Per optimizer, from the summary: which signal forecasts better over the mini-batch runs (F1),
    with each signal's recall, precision and silence there and at full batch; recall by batch size;
    whether the batch sharpness hovers at the threshold; and what does not work."""
    lines = []
    batch = chosen()
    for optimizer, scopes in s["pooled"].items():
        if "mini-batch" not in scopes:
            continue
        rows, at_full = scopes["mini-batch"], scopes.get("full batch", {})
        best = max(rows, key=lambda name: rows[name]["f1"])
        full = max(FULL_BATCH_SIGNALS, key=lambda name: rows[name]["f1"])
        ours, theirs = rows[batch]["f1"], rows[full]["f1"]
        rule = batch.removeprefix("batch sharpness (").rstrip(")")
        if max(ours, theirs) < USEFUL:
            verdict = (
                f"neither the batch sharpness ({rule}: F1 {ours:.2f}) nor the full-batch effective "
                f"sharpness ({full}: F1 {theirs:.2f}) forecasts the spikes (an F1 under {USEFUL:g})"
            )
        else:
            better = "forecasts better than" if ours > theirs else "does not beat"
            verdict = (
                f"the batch sharpness ({rule}: F1 {ours:.2f}) {better} the full-batch effective sharpness "
                f"({full}: F1 {theirs:.2f})"
            )
        lines.append(
            f"- **{optimizer}**, over the mini-batch runs: {verdict}; the best of all signals scored is "
            f"{best} (F1 {rows[best]['f1']:.2f})."
        )
        for name in ("monitor", batch, "a ≥ threshold"):
            t = rows[name]
            line = (
                f"  - {name}: recall {_pt(t, 'recall')}, precision {_pt(t, 'precision')}, silent on "
                f"{t['silent']}/{t['quiet_runs']} quiet runs, {t['overhead']:.3f} full gradients per step"
            )
            if name in at_full:
                u = at_full[name]
                line += f" (at full batch: recall {_pt(u, 'recall')}, precision {_pt(u, 'precision')})"
            lines.append(line + ".")
        sizes = s["by_size"][optimizer]
        lines.append(
            "  - recall by batch size, monitor / batch sharpness: "
            + ", ".join(
                f"{size} {forecasts.pct(sizes[size]['monitor']['recall'])} / "
                f"{forecasts.pct(sizes[size][batch]['recall'])}"
                for size in _sizes(sizes)
            )
            + "."
        )
        rules = [variant(*v) for v in VARIANTS]
        lines.append(
            "  - the batch-sharpness rules' F1: "
            + ", ".join(f"{name.removeprefix('batch sharpness ')} {rows[name]['f1']:.2f}" for name in rules)
            + f" (the monitor's default: {batch})."
        )
        hover = s["hover"].get(optimizer, {})
        lines.append(
            "  - at the middle η (the full-batch edge of stability), late in the run, the median of batch "
            "sharpness / threshold and of full-batch a / threshold: "
            + ", ".join(
                f"{size} {_num(hover[size]['batch'])} and {_num(hover[size]['a'])}" for size in _sizes(hover)
            )
            + "."
        )
        at = {size: values["batch"] for size, values in hover.items() if values["batch"] is not None}
        near = [size for size in _sizes(at) if abs(at[size] - 1) <= HOVER]
        far = [size for size in _sizes(at) if size not in near]
        lines.append(
            f"  - so the batch sharpness hovers at the threshold (median within {HOVER:.0%}) at batch "
            f"sizes: {', '.join(near) or 'none'}; not at: {', '.join(far) or 'none'}."
        )
        missed = [f"{name} ({forecasts.pct(t['recall'])})" for name, t in rows.items() if _under(t, "recall")]
        wrong = [
            f"{name} ({forecasts.pct(t['precision'])})" for name, t in rows.items() if _under(t, "precision")
        ]
        if missed:
            lines.append(
                f"  - does not work: catch under half of the mini-batch spikes (recall): {', '.join(missed)}."
            )
        if wrong:
            lines.append(
                f"  - does not work: wrong in over half of their warnings (precision): {', '.join(wrong)}."
            )
    return lines


def _under(t: dict, key: str) -> bool:
    """Below half on ``key`` where there is something to score it on (spikes, or warnings)."""
    scored = t["spikes"] if key == "recall" else t["warnings"]
    return bool(scored) and (t[key] or 0.0) < 0.5


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _pt(t: dict, key: str) -> str:
    count = {"recall": (t["caught"], t["spikes"]), "precision": (t["right"], t["warnings"])}[key]
    return f"{forecasts.pct(t[key])} ({count[0]}/{count[1]})"


def _row(label: str, t: dict) -> str:
    return (
        f"| {label} | {_pt(t, 'recall')} | {_pt(t, 'precision')} | {t['silent']}/{t['quiet_runs']} | "
        f"{t['overhead']:.3f} |"
    )


def markdown(results: dict, meta: dict) -> str:
    steps, horizon = meta["steps"], meta["horizon"]
    s = results["summary"]
    lines = [
        "# Mini-batch training: full-batch effective sharpness against batch sharpness",
        "",
        f"Generated by `python benchmarks/minibatch.py` (regenerate this page and docs/minibatch.json with "
        f"it; `--rescore` redraws them from the JSON). Examples per problem: "
        f"{', '.join(f'{p} {n}' for p, n in N.items())}; {steps} monitored steps "
        f"per run, horizon {horizon}, SGD (no momentum) and Adam (torch's defaults) from torch.optim on "
        f"mini-batches reshuffled every epoch. Spikes are judged on the full-batch training loss, "
        f"evaluated after every step. The batch sharpness is measured every {BATCH_EVERY} steps over "
        f"{BATCHES} batches of the training batch size. The benchmark's docstring defines each signal, "
        "the scores (those of docs/forecasts.md) and the overhead (in full-batch gradients per step).",
        "",
        "## Conclusion",
        "",
        *results["conclusion"],
        "",
        "## Pooled over problems and batch sizes",
        "",
        "| optimizer · runs · signal | recall | precision | silent | overhead (full grads/step) |",
        "|---|---|---|---|---|",
    ]
    for optimizer, scopes in s["pooled"].items():
        for scope, rows in sorted(scopes.items(), reverse=True):
            for name, t in rows.items():
                lines.append(_row(f"{optimizer} · {scope} · {name}", t))
    lines += [
        "",
        "## Per optimizer, problem and batch size",
        "",
        f"The signals of the full-batch effective sharpness against the monitor's default "
        f"batch-sharpness rule ({chosen()}); "
        "overhead also as a multiple of the training step's own gradient.",
        "",
        "| optimizer | problem | batch | signal | recall | precision | silent | overhead (full grads/step) "
        "| × training step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for optimizer, problems in s["table"].items():
        for problem, sizes in problems.items():
            for size, rows in sorted(sizes.items(), key=lambda item: -int(item[0])):
                for name in (*FULL_BATCH_SIGNALS, chosen()):
                    t, n = rows[name], N[problem]
                    label = "full" if int(size) >= n else size
                    lines.append(
                        f"| {optimizer} | {problem} | {label} | {name} | {_pt(t, 'recall')} | "
                        f"{_pt(t, 'precision')} | {t['silent']}/{t['quiet_runs']} | {t['overhead']:.3f} | "
                        f"{t['overhead'] * n / int(size):.1f} |"
                    )
    lines += [
        "",
        "## Runs",
        "",
        "| optimizer | problem | batch | η | spikes (counted) | diverged at | monitor: caught, warnings "
        f"(right) | {chosen()}: caught, warnings (right) | median batch "
        "sharpness / threshold | max a / threshold |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, run in results["runs"].items():
        optimizer, problem, size, lr = key.split("|")
        scored = signals(run, steps, horizon)
        m, b = scored["monitor"], scored[chosen()]
        ratios = [r for _, r in run["batch_sharpness"]]
        peak = max((r for _, r in run["sharpness"]), default=math.nan)
        lines.append(
            f"| {optimizer} | {problem} | {'full' if int(size) >= run['n'] else size} | {float(lr):g} | "
            f"{forecasts._steps(m['spikes'])} | {forecasts._or_dash(run['diverged_at'])} | "
            f"{len(m['caught'])}, {m['warnings']} ({m['right_warnings']}) | {len(b['caught'])}, "
            f"{b['warnings']} ({b['right_warnings']}) | {np.median(ratios) if ratios else math.nan:.3g} | "
            f"{peak:.3g} |"
        )
    return "\n".join(lines) + "\n"


def batch_sizes(text: str, n: int) -> list[int]:
    sizes = []
    for item in text.split(","):
        size = n if item == "full" else positive_int("batch size", item)
        if size < n or item == "full":
            sizes.append(size)  # a batch of n or more examples is the full batch, run as "full"
    return sizes


def rescore(results: dict) -> None:
    meta = results["meta"]
    results["summary"] = summary(results, meta["steps"], meta["horizon"])
    results["conclusion"] = conclusion(results["summary"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default=",".join(NETWORKS))
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    ap.add_argument("--batch-sizes", default="full,256,128,64,32")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--horizon", type=int, default=50)
    ap.add_argument("--out", default=str(ROOT / "docs" / "minibatch.md"))
    ap.add_argument("--reuse", help="a JSON written by an earlier run: its runs are not repeated")
    ap.add_argument("--rescore", action="store_true", help="with --reuse: redraw the pages, train nothing")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    meta = {"steps": args.steps, "horizon": args.horizon}
    results = json.loads(Path(args.reuse).read_text()) if args.reuse else {"meta": meta, "runs": {}}
    if results["meta"] != meta:
        ap.error(f"--reuse's runs were made with {results['meta']}, not {meta}")
    if not args.rescore:
        for optimizer in args.optimizers.split(","):
            for problem in args.problems.split(","):
                for size in batch_sizes(args.batch_sizes, N[problem]):
                    for lr in GRIDS[optimizer][problem]:
                        key = f"{optimizer}|{problem}|{size}|{lr}"
                        if key in results["runs"]:
                            continue
                        t0 = time.time()
                        results["runs"][key] = run = train(
                            problem, optimizer, lr, size, N[problem], args.steps, args.horizon
                        )
                        scored = signals(run, args.steps, args.horizon)
                        m, b = scored["monitor"], scored[chosen()]
                        print(
                            f"{key}: spikes {m['spikes']} monitor {len(m['caught'])} caught, "
                            f"{m['warnings']} warnings ({m['right_warnings']} right); batch "
                            f"{len(b['caught'])} caught, {b['warnings']} ({b['right_warnings']} right); "
                            f"{time.time() - t0:.0f} s",
                            flush=True,
                        )
                        out.with_suffix(".json").write_text(json.dumps(results))
    rescore(results)
    out.with_suffix(".json").write_text(json.dumps(results))
    out.write_text(markdown(results, meta))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
