"""The chaos floor: how far the discrete optimizer's own midpoints move when the point it starts
from moves at rounding level, beside Edge Flow's and the stable flow's distances in docs/results.json.
Regenerates ``docs/chaos_floor.md`` (and ``docs/chaos_floor.json``).

    python benchmarks/chaos_floor.py                      # momentum, Adam and GD network cases (~15 min)
    python benchmarks/chaos_floor.py --cases mnist5k-vit-adam,digits-mlp-adam --out /tmp/floor.md

Each case is one of ``benchmarks/fidelity.py``'s suite (its problem, optimizer, η, steps, warm start,
record and sharpness cadence and dtype). The discrete run goes once from the case's start point and
once per seed from that point perturbed by a relative ``perturbation_size(dtype)`` per entry (after
the warm start: where every model starts). The floor is the perturbed run's midpoints' distance to the
reference run's, ‖w*'_k − w*_k‖ / ‖w*_k − w₀‖, summarized as the fidelity table summarizes a model's
distance (median over the run and over the EoS window, ``edgeflow.metrics``): what two equally valid
discrete runs differ by, so what no deterministic model can be guaranteed to beat.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

import edgeflow as ef
from edgeflow import runner
from edgeflow.metrics import REFERENCE, field, onset_profile, record_steps, smoothed_onset_profile
from edgeflow.results import Result

try:  # run as a script: benchmarks/ is on sys.path
    from fidelity import SUITE, Case, _f, case_lr
except ImportError:  # loaded by tests through conftest.load_benchmark
    import importlib.util
    import sys

    _spec = importlib.util.spec_from_file_location("fidelity", Path(__file__).with_name("fidelity.py"))
    _fidelity = importlib.util.module_from_spec(_spec)
    sys.modules["fidelity"] = _fidelity
    _spec.loader.exec_module(_fidelity)
    SUITE, Case, _f, case_lr = _fidelity.SUITE, _fidelity.Case, _fidelity._f, _fidelity.case_lr

ROOT = Path(__file__).resolve().parents[1]
Builder = Callable[[], ef.Problem]
#: the GD cases run by default besides every momentum and Adam case (the toys have no chaos to show)
GD_CASES = ("digits-mlp", "mnist5k-cnn", "mnist5k-vit")
DEFAULT_CASES = tuple(
    c.name
    for c in SUITE
    if c.optimizer in ("momentum", "adam") or (c.optimizer == "gd" and c.name in GD_CASES)
)
#: the relative perturbation asked for; float32 cannot hold it (it rounds away), see perturbation_size
TARGET_PERTURBATION = 1e-12
#: Edge Flow "at the floor": within this factor of it
FLOOR_FACTOR = 2.0
#: the onset goal of issue 23: first peak within 3% in height and 15% of the crossing-to-peak delay
PEAK_HEIGHT_GOAL = 0.03
PEAK_TIMING_GOAL = 0.15
#: running-median window of the smoothed first peak (``edgeflow.metrics.smoothed_onset_profile``)
SMOOTHING_WINDOW = 3


def perturbation_size(dtype: torch.dtype) -> float:
    """Relative size per entry of the start's perturbation: 1e-12, or where the dtype's rounding
    would swallow that (float32: ε ≈ 1.2e-7), 2ε — a couple of ulps, the size by which two machines'
    roundings already set two runs apart."""
    return max(TARGET_PERTURBATION, 2.0 * float(torch.finfo(dtype).eps))


def perturb(w: torch.Tensor, size: float, seed: int) -> torch.Tensor:
    """``w ⊙ (1 + size·z)``, z standard normal from ``seed``, rounded to ``w``'s dtype. Raises when
    no entry changed (a size below the dtype's resolution)."""
    if not size > 0:
        raise ValueError(f"size must be positive, got {size!r}")
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(w.shape, generator=gen, dtype=torch.float64)
    out = (w.detach().cpu().double() * (1.0 + size * z)).to(dtype=w.dtype, device=w.device)
    if torch.equal(out, w):
        raise ValueError(
            f"a relative perturbation of {size:g} leaves every entry of a {w.dtype} vector as is"
        )
    return out


@contextlib.contextmanager
def perturbed_start(size: float, seed: int) -> Iterator[None]:
    """Within it, ``ef.compare`` perturbs the point its flows start from (after the warm start, so
    the optimizer state the warm start built is kept exactly: the models start from that point and
    state too, and the floor is then the run's own sensitivity, not the warm start's)."""
    original = runner._warm_start

    def warm_then_perturb(problem, optimizer, w0, steps):
        w, state = original(problem, optimizer, w0, steps)
        return perturb(w, size, seed), state

    runner._warm_start = warm_then_perturb
    try:
        yield
    finally:
        runner._warm_start = original


def discrete_run(
    case: Case, perturbation: tuple[float, int] | None = None, build: Builder | None = None
) -> Result:
    """The case's discrete optimizer (its ``midpoint`` flow: the iterates and their midpoints, one
    gradient per step) at the case's records and sharpness cadence; ``perturbation`` (size, seed)
    moves its start as ``perturbed_start`` does. ``build`` makes the problem (default: the case's
    registry problem)."""
    problem = build() if build is not None else ef.make_problem(case.problem, **case.params)
    with perturbed_start(*perturbation) if perturbation else contextlib.nullcontext():
        return ef.compare(
            problem,
            case_lr(case),
            case.steps,
            (REFERENCE,),
            record_every=case.every,
            sharpness_every=case.every,
            save_params=True,
            optimizer=case.optimizer,
            warm_start=case.warm_start,
        )


def _median(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else None


def floor_distance(ref: Result, other: Result) -> dict:
    """``other``'s midpoints against ``ref``'s, as the fidelity table measures a model: at their
    shared records k > 0, ‖w*'_k − w*_k‖ / ‖w*_k − w₀‖ (w₀ the reference's start); its median over
    the run and over the EoS window (from the reference's first crossing of the threshold), and the
    trace. A run that stopped (diverged) counts only at the records it has."""
    a, b = ref[REFERENCE], other[REFERENCE]
    steps, ia, ib = np.intersect1d(record_steps(a), record_steps(b), return_indices=True)
    _, ja, _ = np.intersect1d(ref.distances["step"], steps, return_indices=True)
    scale = np.asarray(ref.distances[f"{REFERENCE}-w0"], dtype=np.float64)[ja]
    diff = np.linalg.norm(
        np.asarray(a["params"][ia], np.float64) - np.asarray(b["params"][ib], np.float64), axis=1
    )
    keep = steps > 0  # w*_0 = w₀: no travel to measure against
    steps, diff, scale = steps[keep], diff[keep], scale[keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(scale > 0, diff / scale, np.nan)
    cross = onset_profile(record_steps(a), field(a, ref.sharpness_field), ref.threshold)["cross"]
    eos = steps >= cross if cross is not None else np.zeros(len(steps), bool)
    return {
        "median": _median(rel),
        "eos_median": _median(rel[eos]),
        "eos_from": cross,
        "steps": steps.tolist(),
        "distance": [float(x) if np.isfinite(x) else None for x in rel],
    }


def peaks(res: Result, window: int = SMOOTHING_WINDOW) -> dict:
    """The run's crossing and first peak of its sharpness at the midpoints, as ``onset_profile``
    reads them (``raw``) and from the running median of ``window`` measurements (``smoothed``),
    and the measured trace itself (``steps``, ``sharpness``)."""
    rec = res[REFERENCE]
    steps, s = record_steps(rec), field(rec, res.sharpness_field)
    keys = ("cross", "peak", "peak_step")
    raw = onset_profile(steps, s, res.threshold)
    smooth = smoothed_onset_profile(steps, s, res.threshold, window)
    ok = np.isfinite(s)
    return {
        "raw": {k: raw[k] for k in keys},
        "smoothed": {k: smooth[k] for k in keys},
        "steps": steps[ok].tolist(),
        "sharpness": s[ok].tolist(),
    }


def peak_spread(ref: dict, others: list[dict]) -> dict:
    """The perturbed runs' first peaks against the reference's: the largest height difference as a
    fraction of the reference's height, the largest step difference, and that as a fraction of the
    reference's crossing-to-peak delay; whether each is within the onset goal. None where a run has
    no peak (and ``missing`` counts those runs)."""
    if ref["peak"] is None:
        return {"height": None, "steps": None, "of_delay": None, "missing": len(others), "within": None}
    have = [o for o in others if o["peak"] is not None]
    out: dict = {"missing": len(others) - len(have)}
    if not have:
        return {**out, "height": None, "steps": None, "of_delay": None, "within": None}
    height = max(abs(o["peak"] - ref["peak"]) / ref["peak"] for o in have)
    offset = max(abs(o["peak_step"] - ref["peak_step"]) for o in have)
    delay = ref["peak_step"] - ref["cross"]
    # a peak at the crossing record leaves the timing goal no room at all: any offset misses it
    of_delay = offset / delay if delay > 0 else (0.0 if offset == 0 else None)
    within = (
        out["missing"] == 0
        and height <= PEAK_HEIGHT_GOAL
        and of_delay is not None
        and of_delay <= PEAK_TIMING_GOAL
    )
    return {**out, "height": height, "steps": offset, "of_delay": of_delay, "within": within}


def models(fidelity_json: dict | None, name: str) -> dict:
    """Edge Flow's and the stable flow's distances and first peaks for case ``name`` in a
    results.json (``benchmarks/fidelity.py``), with the discrete run's onset as that file has it."""
    case = next((c for c in (fidelity_json or {}).get("cases", []) if c.get("name") == name), None)
    if case is None:
        return {}
    out = {"gd_onset": case.get("gd_onset"), "started": fidelity_json.get("started")}
    for key, label in (("edge", "edge"), ("gradient", "stable")):
        row = case["flows"].get(key)
        if row is not None:
            out[label] = {
                "median": row.get("distance_median"),
                "eos_median": row.get("distance_eos_median"),
                "onset": row.get("onset"),
            }
    return out


def measure_case(
    case: Case, seeds: tuple[int, ...], window: int = SMOOTHING_WINDOW, build: Builder | None = None
) -> dict:
    """The reference run and one perturbed run per seed: the floor per seed and its minimum (the
    smallest distance by which the discrete run itself can be missed), and the first peaks (raw
    and from the running median of ``window`` measurements). ``build`` makes the problem (default:
    the case's registry problem)."""
    if not seeds:
        raise ValueError("measure_case needs at least one seed")
    t0 = time.perf_counter()
    ref = discrete_run(case, build=build)
    dtype = str(ref.config.get("dtype", "float64"))  # the problem's, as the run recorded it
    size = perturbation_size(getattr(torch, dtype))
    runs = []
    for seed in seeds:
        other = discrete_run(case, (size, seed), build)
        runs.append({"seed": seed, **floor_distance(ref, other), "peaks": peaks(other, window)})
        print(f"   seed {seed}: floor {runs[-1]['median']} / {runs[-1]['eos_median']}", flush=True)
    ref_peaks = peaks(ref, window)

    def least(key: str) -> float | None:
        values = [r[key] for r in runs if r[key] is not None]
        return min(values) if values else None

    return {
        "name": case.name,
        "problem": case.problem,
        "optimizer": case.optimizer,
        "lr": case_lr(case),
        "steps": case.steps,
        "every": case.every,
        "warm_start": case.warm_start,
        "dtype": str(dtype),
        "threshold": ref.threshold,
        "perturbation": size,
        "window": window,
        "floor": {"median": least("median"), "eos_median": least("eos_median")},
        "runs": runs,
        "peaks": ref_peaks,
        "spread": {
            kind: peak_spread(ref_peaks[kind], [r["peaks"][kind] for r in runs])
            for kind in ("raw", "smoothed")
        },
        "wall_s": time.perf_counter() - t0,
    }


def verdicts(case: dict, model: dict) -> dict:
    """Per window: whether "Edge Flow ≤ ½ stable flow" is achievable in principle (the floor below
    half the stable flow's distance), Edge Flow's distance over the floor, and whether it is within
    ``FLOOR_FACTOR`` of it."""
    out = {}
    for window in ("median", "eos_median"):
        floor = case["floor"][window]
        stable = model.get("stable", {}).get(window)
        edge = model.get("edge", {}).get(window)
        achievable = None if floor is None or stable is None else floor < 0.5 * stable
        ratio = edge / floor if edge is not None and floor else None
        out[window] = {
            "achievable": achievable,
            "edge_over_floor": ratio,
            "edge_at_floor": None if ratio is None else ratio <= FLOOR_FACTOR,
            "goal_met": None if edge is None or stable is None else edge <= 0.5 * stable,
        }
    return out


# ---------------------------------------------------------------------------------------------- report
def _yes(x: bool | None) -> str:
    return "–" if x is None else ("yes" if x else "no")


def _peak(p: dict) -> str:
    return "none" if p["peak"] is None else f"{p['peak']:.4g} ({p['peak_step']})"


def write_report(cases: list[dict], out: Path, started: str, source: Path, partial: str | None) -> None:
    window = cases[0]["window"] if cases else SMOOTHING_WINDOW
    lines = [
        "# The chaos floor of the discrete runs",
        "",
        *([f"**Partial: {partial} measured so far.**", ""] if partial else []),
        f"Generated by `python benchmarks/chaos_floor.py` (written {started}; edgeflow {ef.__version__}, "
        f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} thread(s), CPU); "
        f"Edge Flow's and the stable flow's distances are read from `{source.relative_to(ROOT)}` "
        "(`benchmarks/fidelity.py`). Regenerate it rather than edit it.",
        "",
        "Each case is the fidelity suite's ([results.md](results.md)): its problem, optimizer, η, steps, "
        "warm start, dtype and records (every 5 steps, λ₁(P⁻¹H) or GD's sharpness measured at each). The "
        "discrete run goes once from the case's start and once per seed from that start perturbed entry "
        f"by entry by a relative {TARGET_PERTURBATION:g} × a standard normal (float32 cannot hold that: "
        "there 2ε ≈ 2.4e-7, a couple of ulps, the size by which two machines' roundings already set runs "
        "apart), applied after the warm start, where every model starts. The **floor** is the perturbed "
        "run's midpoints' distance to the reference run's, ‖w*′_k − w*_k‖ / ‖w*_k − w₀‖, with the fidelity "
        "table's summary (median over the run / over the EoS window, from the reference's crossing), the "
        "smaller over the seeds. Two runs a rounding apart are equally valid discrete runs, so no "
        "deterministic model can be guaranteed closer to the midpoints than about the floor (by the "
        "triangle inequality, a model is at least half the floor from one of the two).",
        "",
        "## Floor against the models",
        "",
        "Distances to the discrete run's midpoints, median over the run / over the EoS window. "
        "'½ stable achievable': the floor is below half the stable flow's distance, so the goal "
        "'Edge Flow ≤ ½ stable flow' can be met in principle; 'Edge Flow / floor': how many floors "
        f"Edge Flow is away ('at floor': within {FLOOR_FACTOR:g}×).",
        "",
        "| case | dtype | perturbation | floor (per seed) | floor | Edge Flow | stable flow | goal met "
        "| ½ stable achievable | Edge Flow / floor | at floor | wall |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        m, v = c["model"], c["verdicts"]
        per_seed = "; ".join(f"{_f(r['median'])} / {_f(r['eos_median'])}" for r in c["runs"])

        def pair(d: dict | None) -> str:
            return "–" if not d else f"{_f(d.get('median'))} / {_f(d.get('eos_median'))}"

        def both(key: str, fmt=_yes, v: dict = v) -> str:
            return f"{fmt(v['median'][key])} / {fmt(v['eos_median'][key])}"

        lines.append(
            f"| {c['name']} | {c['dtype']} | {c['perturbation']:.2g} | {per_seed} | {pair(c['floor'])} | "
            f"{pair(m.get('edge'))} | {pair(m.get('stable'))} | {both('goal_met')} | {both('achievable')} | "
            f"{both('edge_over_floor', _f)} | {both('edge_at_floor')} | {c['wall_s'] / 60:.1f} min |"
        )
    lines += [
        "",
        "## First peak under the perturbation",
        "",
        "The discrete runs' crossing and first overshoot peak of the sharpness at the midpoints "
        "(λ₁(P⁻¹H) with a momentum or Adam), raw as `edgeflow.metrics.onset_profile` reads it and "
        f"smoothed (`smoothed_onset_profile`: the same on the running median of {window} "
        "measurements, which a one-record spike does not survive). Spread: the largest difference of "
        "a perturbed run's first peak from the reference's, in height as a fraction of the reference's "
        "height and in steps (and as a fraction of the reference's crossing-to-peak delay); 'in goal': "
        f"within the onset goal ({PEAK_HEIGHT_GOAL:.0%} in height, {PEAK_TIMING_GOAL:.0%} of the delay), "
        "i.e. whether the run is reproducible enough for that goal to be judged. Edge Flow: its raw "
        "first peak in results.json; 'results.json run': the discrete run's there (a reference that "
        "differs from it was moved by the other machine's rounding).",
        "",
        "| case | measure | reference: cross, first peak (step) | perturbed: first peak (step) | "
        "height spread | step spread (of delay) | in goal | Edge Flow | results.json run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        m = c["model"]
        edge = (m.get("edge") or {}).get("onset")
        for kind in ("raw", "smoothed"):
            ref, sp = c["peaks"][kind], c["spread"][kind]
            others = ", ".join(_peak(r["peaks"][kind]) for r in c["runs"])
            height = "–" if sp["height"] is None else f"{sp['height']:.1%}"
            steps = "–" if sp["steps"] is None else f"{sp['steps']} ({_f(sp['of_delay'], '.0%')})"
            raw = kind == "raw"
            lines.append(
                f"| {c['name']} | {kind} | {_f(ref['cross'])}, {_peak(ref)} | {others} | {height} | "
                f"{steps} | "
                f"{_yes(sp['within'])} | {_peak(edge) if raw and edge else '–'} | "
                f"{_peak(m['gd_onset']) if raw and m.get('gd_onset') else '–'} |"
            )
    lines.append("")
    out.write_text("\n".join(lines))
    out.with_suffix(".json").write_text(
        json.dumps({"started": started, "source": str(source.relative_to(ROOT)), "cases": cases}, indent=2)
        + "\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [c.name for c in SUITE]
    ap.add_argument("--cases", default=",".join(DEFAULT_CASES), help=f"subset of: {'; '.join(names)}")
    ap.add_argument("--seeds", default="1,2", help="seeds of the perturbations, one perturbed run each")
    ap.add_argument(
        "--window",
        type=int,
        default=SMOOTHING_WINDOW,
        help="running-median window (odd, in measurements) of the smoothed first peak",
    )
    ap.add_argument("--results", default=str(ROOT / "docs" / "results.json"), help="fidelity.py's JSON")
    ap.add_argument("--out", default=str(ROOT / "docs" / "chaos_floor.md"))
    args = ap.parse_args()
    wanted = [p.strip() for p in args.cases.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in names]
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)}; the suite has: {'; '.join(names)}")
    try:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    except ValueError:
        ap.error(f"--seeds takes comma-separated integers, got {args.seeds!r}")
    if not seeds:
        ap.error("--seeds needs at least one seed")
    if args.window < 1 or args.window % 2 == 0:
        ap.error(f"--window must be an odd integer ≥ 1, got {args.window}")
    source = Path(args.results).resolve()
    fidelity_json = json.loads(source.read_text()) if source.exists() else None
    if fidelity_json is None:
        print(f"no {source}: the models' columns stay empty", flush=True)
    torch.set_num_threads(1)
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    todo = [c for c in SUITE if c.name in wanted]
    cases: list[dict] = []
    for case in todo:
        print(f"== {case.name}", flush=True)
        result = measure_case(case, seeds, args.window)
        result["model"] = models(fidelity_json, case.name)
        result["verdicts"] = verdicts(result, result["model"])
        cases.append(result)
        print(f"   {result['wall_s'] / 60:.1f} min", flush=True)
        # written after every case, so a long run that is stopped still leaves what it measured
        partial = None if len(cases) == len(todo) else f"{len(cases)} of {len(todo)} cases"
        write_report(cases, Path(args.out), started, source, partial)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
