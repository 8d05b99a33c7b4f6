"""Extreme but valid numbers, torch's thread count, and a command line that starts without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import edgeflow as ef
from conftest import run_cli
from edgeflow import threads
from edgeflow.utils import LR_RANGE

QUICK = ["--problem", "quadratic", "--steps", "2", "--quiet", "--no-plots"]


@pytest.mark.parametrize("lr", ["1e-320", "1e-308", "1e300", "1e308"])
def test_a_learning_rate_whose_2_over_eta_or_square_overflows_is_refused_before_work(capsys, tmp_path, lr):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "run", *QUICK, "--lr", lr, "--out", str(out))
    assert code == 2 and f"--lr must be in [{LR_RANGE[0]:g}, {LR_RANGE[1]:g}]" in err and lr in err, err
    assert not out.exists()


@pytest.mark.parametrize("lr", LR_RANGE)
def test_the_extreme_learning_rates_run_to_a_complete_summary(capsys, tmp_path, lr):
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "run", *QUICK, "--lr", repr(lr), "--out", str(out))
    assert code == 0, err
    assert ef.load(out).complete and "2/η" in stdout
    json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda p: ef.compare(p, True, 2, ["gd"]), "lr must be a positive number, got True (bool)"),
        (lambda p: ef.compare(p, "0.1", 2, ["gd"]), "lr must be a positive number, got '0.1' (str)"),
        (lambda p: ef.compare(p, 0.1, 2.5, ["gd"]), "steps must be a positive integer, got 2.5"),
        (lambda p: ef.compare(p, 0.1, "2", ["gd"]), "steps must be a positive integer, got '2' (str)"),
        (lambda p: ef.StabilityMonitor(p, lr=1e-320), "lr must be in"),
        (lambda p: ef.sweep(p, [0.1, 1e-320], 2), "lrs entry must be in"),
    ],
    ids=["lr-bool", "lr-text", "steps-float", "steps-text", "monitor-tiny-lr", "sweep-tiny-lr"],
)
def test_the_api_names_a_value_of_the_wrong_type(call, needle):
    with pytest.raises(ef.ConfigError) as info:
        call(ef.make_problem("quadratic"))
    assert needle in str(info.value)


#: flow options of the wrong type given to the API: refused naming the flow, the option and what is valid
OPTION_ERRORS = [
    ("edge", "substeps", "2", "option 'substeps' must be an integer, or None, got '2' (str)"),
    ("edge", "substeps", 2.0, "option 'substeps' must be an integer, or None, got 2.0"),
    ("edge", "noise", "1", "option 'noise' must be a number (like its default 1.0), got '1' (str)"),
    ("edge", "r0", "0.1", "option 'r0' must be a number, or None, got '0.1' (str)"),
    ("edge", "probe_rounding", "true", "option 'probe_rounding' must be true or false"),
    ("edge", "delay_magnitude", 1, "option 'delay_magnitude' must be true or false, or None, got 1"),
    ("edge", "magnitude", 3, "unknown Edge Flow magnitude 3; valid choices: secant, rayleigh, linear"),
    ("central", "max_eigs", True, "option 'max_eigs' must be an integer (like its default 24), got True"),
    ("central", "resolve", "all", "unknown central.resolve 'all'; valid choices: step, substep"),
    ("gradient", "substep_rate", "1", "option 'substep_rate' must be a number"),
    ("mitigated", "remedy", None, "unknown remedy None; valid choices: edge_capped"),
    ("mitigated", "clip_norm", "1", "option 'clip_norm' must be a number, or None, got '1' (str)"),
]


@pytest.mark.parametrize(
    ("flow", "option", "value", "needle"),
    OPTION_ERRORS,
    ids=[f"{flow}.{option}={value!r}" for flow, option, value, _ in OPTION_ERRORS],
)
def test_a_flow_option_of_the_wrong_type_is_refused_naming_the_flow_option_and_valid_values(
    flow, option, value, needle
):
    with pytest.raises(ef.ConfigError) as info:
        ef.compare(ef.make_problem("quadratic"), 0.1, 2, [flow], options={flow: {option: value}})
    assert str(info.value).startswith(f"flow '{flow}': ") and needle in str(info.value), info.value


def test_every_number_or_flag_option_of_every_flow_refuses_text_and_takes_the_command_lines_values():
    import inspect

    from edgeflow.cli import parse_options
    from edgeflow.processes import make_process, option_names
    from edgeflow.runner import build_processes

    problem = ef.make_problem("quadratic")
    for flow, cls in ef.PROCESSES.items():
        signature = inspect.signature(cls.__init__).parameters
        for option in option_names(flow):
            default = signature[option].default
            if isinstance(default, str) or "str" in str(signature[option].annotation):
                continue  # a choice (or None for its default): refused by name above
            text = json.dumps(default)  # what the command line reads as the default itself
            with pytest.raises(ef.ConfigError, match=f"flow '{flow}': option '{option}' must be"):
                make_process(flow, problem, 0.1, {option: text})
            assert make_process(flow, problem, 0.1, parse_options([f"{flow}.{option}={text}"])[flow])
    given = ["edge.substeps=3", "edge.r0=0.1", "edge.probe_rounding=false", "edge.delay_magnitude=null"]
    procs = build_processes(problem, 0.1, ["edge"], parse_options([*given, "edge.magnitude=linear"]))
    assert (procs["edge"].substeps, procs["edge"].r0, procs["edge"].magnitude_rule) == (3, 0.1, "linear")


def test_thread_count_follows_the_problem_size_and_the_request(capsys, tmp_path, monkeypatch):
    assert threads.choose("auto", 10) == threads.choose(None, threads.SMALL - 1) == 1
    assert 1 <= threads.choose("auto", threads.SMALL) <= threads.available_cores()
    assert threads.choose(3, 10) == 3
    for bad in ("x", "0", "-2", True):
        with pytest.raises(ef.ConfigError, match="--threads must be a positive integer or auto"):
            threads.check(bad)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.request(None) is None and threads.request("2") == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads.request(None) == "auto"

    torch.set_num_threads(2)  # as torch starts on a 2-core machine; auto brings it to 1 on a tiny problem
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "run", *QUICK, "--out", str(out))
    assert code == 0 and "1 thread)" in err, err
    assert torch.get_num_threads() == 1
    assert json.loads((out / "config.json").read_text())["threads"] == 1
    code, _, err = run_cli(capsys, "run", *QUICK, "--threads", "many", "--out", str(tmp_path / "bad"))
    assert code == 2 and "'many'" in err


#: a misspelt name on the command line: exit 2, one line naming it and the valid choices
NAME_ERRORS = [
    (["run", "--problem", "nope"], "unknown problem 'nope'; valid choices: digits-mlp, quadratic, zhu"),
    (["run", "--flows", "gd,nope"], "unknown flow 'nope'; valid choices: gd, midpoint, gradient"),
    (["run", "--optimizer", "nope"], "unknown optimizer 'nope'; valid choices: gd, scalar-rmsprop"),
    (
        ["run", "--flows", "edge", "--option", "edge.nope=1"],
        "unknown option 'nope' for flow 'edge'; valid options: magnitude, substeps, r0",
    ),
    (["run", "--option", "central.substeps=2"], "options given for flow 'central', which is not run"),
    (
        ["run", "--problem", "zhu", "--param", "nope=1"],
        "unknown parameter 'nope' for problem 'zhu'; valid parameters: x0, y0",
    ),
    (
        ["run", "--optimizer", "rmsprop", "--opt", "nope=1"],
        "unknown option 'nope' for optimizer 'rmsprop'; valid options: beta2, eps, bias_correction",
    ),
    (["sweep", "--problem", "nope", "--lrs", "0.1"], "unknown problem 'nope'; valid choices: digits-mlp"),
]


@pytest.mark.parametrize(("argv", "needle"), NAME_ERRORS, ids=[" ".join(argv) for argv, _ in NAME_ERRORS])
def test_a_misspelt_name_exits_2_naming_it_and_the_valid_choices(capsys, argv, needle):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and needle in err and err.count("\n") == 1, err


def test_help_list_and_flag_and_name_errors_answer_without_importing_torch(capsys, tmp_path):
    code, listed, _ = run_cli(capsys, "list")
    flag_errors = [
        ["run", "--checkpoint-every", "0"],
        ["run", "--lr", "x"],
        ["run", "--threads", "0"],
        ["sweep", "--problem", "quadratic", "--lrs", "0"],
        ["run", "--resume", str(tmp_path / "missing")],
    ]
    calls = [*flag_errors, *(argv for argv, _ in NAME_ERRORS)]
    script = (
        "import json, sys\n"
        "from edgeflow.cli import main\n"
        "codes = [main(argv) for argv in json.loads(sys.argv[1])]\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as exc:\n"
        "    codes.append(exc.code)\n"
        "codes.append(main(['list']))\n"
        "print(codes, 'torch' in sys.modules, 'h5py' in sys.modules)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(calls)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == f"{[2] * len(calls) + [0, 0]} False False", proc.stdout
    assert listed in proc.stdout and code == 0
    assert proc.stderr.count("edgeflow: error:") == len(calls)


def test_the_catalog_is_what_the_registries_declare():
    from edgeflow import catalog

    # After changing a problem, flow or optimizer: python -m edgeflow.catalog
    assert catalog.dumps(catalog.build()) == catalog.PATH.read_text(encoding="utf-8")


def test_the_cli_defaults_name_the_library_defaults():
    from edgeflow import cli, optimizers, zoo

    assert cli.DEFAULT_PROBLEM == zoo.DEFAULT_PROBLEM and cli.DEFAULT_OPTIMIZER == optimizers.DEFAULT


def _mlp(out: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, out)).double()


X4 = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
LABELS = torch.tensor([0, 1, 2, 0, 1, 2])


class _WithCounter(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = _mlp()
        self.count = torch.nn.Parameter(torch.zeros(1, dtype=torch.int64), requires_grad=False)

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize(
    ("model", "data", "loss", "needle"),
    [
        (_mlp, lambda: (X4, LABELS.float().reshape(6, 1) * float("nan")), "mse", "float targets"),
        (_mlp, lambda: (X4 * float("nan"), LABELS), "mse", "the loss is nan at the model's initial"),
        (_WithCounter, lambda: (X4, LABELS), "mse", "'count' is int64"),
        (_mlp, lambda: (X4[:, :3], LABELS), "mse", "cannot take X (shape (6, 3)"),
        (_mlp, lambda: X4, "mse", "pair of tensors (X, Y), got a tensor"),
        (_mlp, lambda: (X4, LABELS, LABELS), "mse", "pair of tensors (X, Y), got a tuple of 3"),
        (_mlp, lambda: (X4, LABELS + 1), "ce", "must lie in [0, 2]"),
        (_mlp, lambda: (X4, -torch.ones(6, 3, dtype=torch.float64)), "ce", "class probabilities"),
        (_mlp, lambda: (X4, torch.ones(6, 2, dtype=torch.float64)), "mse", "output shape per example (3,)"),
    ],
    ids=[
        "y-width",
        "nan-loss",
        "int-param",
        "x-width",
        "not-a-pair",
        "triple",
        "ce-label",
        "ce-negative",
        "mse-width",
    ],
)
def test_from_module_refuses_what_it_cannot_do(model, data, loss, needle):
    with pytest.raises(ef.ConfigError) as info:
        ef.Problem.from_module(model(), data(), loss=loss)
    assert needle in str(info.value)


def test_from_function_refuses_a_loss_that_does_not_depend_on_w():
    with pytest.raises(ef.ConfigError, match="does not depend on w"):
        ef.Problem.from_function(lambda w: torch.tensor(float(w.sum().item()) ** 2), [1.0, 2.0])


def test_edge_stable_gd_refuses_misuse_with_a_named_error():
    model = _mlp()
    with pytest.raises(ef.ConfigError, match="margin must be in"):
        ef.EdgeStableGD(model.parameters(), lr=0.1, margin=2.5)
    with pytest.raises(ef.ConfigError, match="lr must be a positive number"):
        ef.EdgeStableGD(model.parameters(), lr="0.1")
    model[0].weight.requires_grad_(False)
    with pytest.raises(ef.ConfigError, match="does not require grad"):
        ef.EdgeStableGD(model.parameters(), lr=0.1)
    model[0].weight.requires_grad_(True)
    opt = ef.EdgeStableGD(model.parameters(), lr=0.1)

    def loss() -> torch.Tensor:
        return torch.nn.functional.cross_entropy(model(X4), LABELS)

    def with_backward():  # the usual torch.optim closure
        opt.zero_grad()
        value = loss()
        value.backward()
        return value

    before = [p.detach().clone() for p in model.parameters()]
    for closure, needle in (
        (with_backward, "must not call backward()"),
        (lambda: loss().detach(), "without a graph"),
        (lambda: loss() * float("nan"), None),
    ):
        opt.zero_grad(set_to_none=True)
        with pytest.raises((ef.ConfigError, FloatingPointError), match=needle or "nan"):
            opt.step(closure)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    opt.step(lambda: (opt.zero_grad(set_to_none=True), loss())[1])  # as the hint says: it steps
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_the_monitor_raises_on_a_non_finite_loss_instead_of_forecasting():
    prob = ef.make_problem("quadratic")
    mon = ef.StabilityMonitor(prob, lr=0.1)
    mon.update(prob.w0)
    with pytest.raises(FloatingPointError, match="the loss is nan"):
        mon.update(prob.w0, loss=float("nan"))


def test_a_flow_pinned_at_the_threshold_has_no_overshoot_and_a_crossing_gd_never_makes_is_an_error():
    from edgeflow.metrics import fidelity, fidelity_markdown, onset_profile
    from edgeflow.results import FlowRecord, Result

    steps = np.arange(0, 41)
    rising = np.minimum(3.0 + steps, 5.0)  # reaches 2/η = 5 at step 2 and is held there
    pinned = rising * (1 + 1e-6 * np.cos(steps))  # a projection's rounding on the plateau
    pinned[10] = 5.0 * (1 + 5e-4)
    assert onset_profile(steps, pinned, 5.0)["peak"] is None
    below = np.full(len(steps), 4.0)  # GD's midpoint sharpness stays below 2/η
    flows = {
        "midpoint": FlowRecord({"step": steps, "sharpness": below, "train_loss": np.ones(len(steps))}),
        "central": FlowRecord({"step": steps, "sharpness": pinned, "train_loss": np.ones(len(steps))}),
    }
    res = Result(0.4, flows, {"step": steps, "central-midpoint": steps * 0.0, "midpoint-w0": steps * 1.0})
    onset = fidelity(res)["central"]["onset"]
    assert onset["cross"] is not None and onset["gd_never_crosses"] and onset["peak"] is None
    row = next(line for line in fidelity_markdown(fidelity(res)) if line.startswith("| central"))
    assert f"| {onset['cross']}, GD never: model error |" in row


def test_a_network_too_large_for_memory_is_refused_with_its_size_before_allocating():
    with pytest.raises(ef.ConfigError, match=r"width=1000000000\) has 1e\+18 parameters: .* GiB available"):
        ef.make_problem("digits-mlp", n=20, width=10**9)


def test_a_run_whose_vectors_cannot_fit_is_refused_with_its_size_before_it_starts(tmp_path, monkeypatch):
    from edgeflow import utils

    problem = ef.Problem.from_function(lambda w: (w * w).sum(), torch.zeros(10_000, dtype=torch.float64))
    # 101 Lanczos vectors and 2 iterates of 10⁴ float64 parameters: 8.2 MB, more than 8 MB
    monkeypatch.setattr(utils, "available_memory", lambda device: 8 * 10**6)
    out = tmp_path / "run"
    with pytest.raises(ef.ConfigError) as info:
        ef.compare(problem, 0.1, 2, ["gd", "midpoint"], out=out)
    message = str(info.value)
    assert "the run's 103 vectors of 1e+04 parameters in float64" in message, message
    assert "Lanczos basis of 101) need 0.00767 GiB, more than the 0.00745 GiB available on cpu" in message
    assert "or float32" in message and not out.exists()
    monkeypatch.setattr(utils, "available_memory", lambda device: 9 * 10**6)
    assert ef.compare(problem, 0.1, 2, ["gd", "midpoint"]).complete


def test_from_module_refuses_a_model_whose_copies_cannot_fit_before_converting_it(monkeypatch):
    from edgeflow import utils

    model = _mlp().float()  # 43 parameters: w0 and the problem's copy in float64 take 688 bytes
    monkeypatch.setattr(utils, "available_memory", lambda device: 600)
    with pytest.raises(ef.ConfigError, match=r"the model has 43 parameters: .* float64 need .* GiB, more"):
        ef.Problem.from_module(model, (X4.float(), LABELS), dtype="float64")
    assert all(p.dtype == torch.float32 for p in model.parameters())  # refused before model.to()
