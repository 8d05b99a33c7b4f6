"""Every input defect is one clear error before any gradient: a one-line `edgeflow: error:` with exit
code 2 on the command line, a ``ConfigError`` naming the value and the valid choices in the API. An
RK4 flow that cannot be integrated says so with ``IntegrationError``, never with a non-finite state."""

from __future__ import annotations

import re

import pytest
import torch

import edgeflow as ef
from conftest import run_cli
from edgeflow.config import RunConfig, load_toml
from edgeflow.processes import make_process
from edgeflow.utils import resolve_device, seed_int


def assert_one_error_line(capsys, tmp_path, argv: list[str], needles: list[str]) -> None:
    out_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, *argv, "--out", str(out_dir), "--quiet", "--no-plots")
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1, err
    assert lines[0].startswith("edgeflow: error:")
    for needle in needles:
        assert needle in lines[0]
    assert not out_dir.exists()


# ------------------------------------------------------------------------------------ command line
FLAGS = [
    (["--problem", "zhu", "--param", "x0=abc"], ["'x0'", "'zhu'", "a number", "'abc'"]),
    (["--problem", "zhu", "--param", "x0=[1,2]"], ["'x0'", "a number", "[1, 2]"]),
    (["--problem", "zhu", "--param", "x0=true"], ["'x0'", "a number", "True"]),
    (["--problem", "digits-mlp", "--param", "n=2.5"], ["'n'", "an integer", "2.5"]),
    (["--problem", "digits-mlp", "--param", "loss=1"], ["'loss'", "a string", "1"]),
    (["--problem", "zhu", "--param", "seed=3"], ["'seed'", "not a problem parameter", "--seed"]),
    (["--problem", "zhu", "--param", "dtype=float32"], ["'dtype'", "--dtype"]),
    (["--problem", "zhu", "--param", "device=cpu"], ["'device'", "--device"]),
    (["--seed", str(2**70)], ["seed", "[0, 2**63 - 1]", str(2**70)]),
    (["--seed", "-1"], ["seed", "[0, 2**63 - 1]", "-1"]),
    (["--device", "cpu:3"], ["'cpu:3'", "cpu, cuda, cuda:N, mps"]),
    (["--flows", "gd,gd,edge"], ["'gd'", "twice"]),
    (["--problem", ".:x", "--lr", "0.1", "--steps", "2"], ["'.:x'", "absolute module"]),
    (["--problem", "..pkg:x", "--lr", "0.1", "--steps", "2"], ["'..pkg'", "absolute module"]),
    (["--option", "gradient.max_substeps=0"], ["max_substeps must be a positive integer", "got 0"]),
]


@pytest.mark.parametrize(("flags", "needles"), FLAGS, ids=[" ".join(f) for f, _ in FLAGS])
def test_bad_flag_is_one_clear_line(capsys, tmp_path, flags, needles):
    assert_one_error_line(capsys, tmp_path, ["run", *flags], needles)


TOML = [
    ("problem = 42", ["problem must be a string", "42"]),
    ("out = 5", ["out must be a string", "5"]),
    ('seed = "abc"', ["seed", "[0, 2**63 - 1]", "'abc'"]),
    ("seed = 1.5", ["seed", "1.5"]),
    ("seed = -3", ["seed", "-3"]),
    ("seed = true", ["seed", "True"]),
    ("lr = true", ["lr must be a number", "True"]),
    ("steps = true", ["steps must be an integer", "True"]),
    ("steps = 2.5", ["steps must be an integer", "2.5"]),
    ('plots = "no"', ["plots must be true or false", "'no'"]),
    ('save_params = "no"', ["save_params must be true or false", "'no'"]),
    ("flows = 3", ["flows", "3"]),
    ("device = 1", ["device must be a string", "1"]),
    ("dtype = 2", ["dtype must be a string", "2"]),
    ('record_every = "x"', ["--record-every", "'x'"]),
    ("[params]\nseed = 3", ["'seed'", "--seed"]),
]


@pytest.mark.parametrize(("text", "needles"), TOML, ids=[t for t, _ in TOML])
def test_wrongly_typed_config_value_is_one_clear_line(capsys, tmp_path, text, needles):
    path = tmp_path / "bad.toml"
    path.write_text(f'problem = "zhu"\n{text}\n' if not text.startswith("problem") else text + "\n")
    assert_one_error_line(capsys, tmp_path, ["run", "--config", str(path)], needles)


def test_binary_config_file_is_one_clear_line(capsys, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    assert_one_error_line(capsys, tmp_path, ["run", "--config", str(path)], [str(path), "UTF-8"])


def test_config_directory_is_one_clear_line(capsys, tmp_path):
    (tmp_path / "conf").mkdir()
    path = str(tmp_path / "conf")
    assert_one_error_line(capsys, tmp_path, ["run", "--config", path], [path, "is a directory"])


def test_merged_keeps_the_command_line_strings_for_later_checks():
    # the flags layer passes --lr/--steps as strings and the integer flags as ints
    cfg = RunConfig.merged({"lr": "0.1", "steps": "5", "seed": 7, "record_every": 2, "plots": False})
    assert (cfg.lr, cfg.steps, cfg.seed, cfg.record_every, cfg.plots) == ("0.1", "5", 7, 2, False)
    # and a resolved configuration merges again (None is "unset")
    assert RunConfig.merged(vars(RunConfig())) == RunConfig()


@pytest.mark.parametrize(
    ("layer", "pattern"),
    [
        ({"lr": True}, r"lr must be a number, got True"),
        ({"plots": "no"}, r"plots must be true or false, got 'no'"),
        ({"seed": 2**63}, r"seed must be an integer in \[0, 2\*\*63 - 1\]"),
        ({"flows": ["gd", "edge", "gd"]}, r"flow 'gd' is named twice"),
        ({"params": {"device": "cuda"}}, r"'device' is a setting of the run.*--device"),
    ],
)
def test_merged_rejects_wrong_types(layer, pattern):
    with pytest.raises(ef.ConfigError, match=pattern):
        RunConfig.merged(layer)


def test_load_toml_errors(tmp_path):
    with pytest.raises(ef.ConfigError, match="is a directory"):
        load_toml(tmp_path)
    (tmp_path / "latin1.toml").write_bytes('problem = "zhü"\n'.encode("latin-1"))
    with pytest.raises(ef.ConfigError, match="not a UTF-8 text file"):
        load_toml(tmp_path / "latin1.toml")


# -------------------------------------------------------------------------------- seeds and devices
@pytest.mark.parametrize("seed", [-1, 2**63, 2**70, True, 1.5, "3", None])
def test_seed_outside_64_bits_or_not_an_integer(seed):
    with pytest.raises(ef.ConfigError, match=r"seed must be an integer in \[0, 2\*\*63 - 1\]"):
        seed_int("seed", seed)
    with pytest.raises(ef.ConfigError, match="seed"):
        ef.make_problem("zhu", seed=seed)


def test_seed_bounds_are_accepted():
    assert seed_int("seed", 0) == 0 and seed_int("seed", 2**63 - 1) == 2**63 - 1


def test_cpu_takes_no_index():
    with pytest.raises(ef.ConfigError, match=r"'cpu:3'.*valid choices: cpu, cuda"):
        resolve_device("cpu:3")
    assert resolve_device("cpu") == torch.device("cpu")


# ------------------------------------------------------------------------------ problem parameters
@pytest.mark.parametrize(
    ("name", "params", "pattern"),
    [
        ("zhu", {"x0": "abc"}, r"parameter 'x0' of problem 'zhu' must be a number .*got 'abc'"),
        ("zhu", {"x0": [1, 2]}, r"'x0'.*a number.*\[1, 2\]"),
        ("zhu", {"y0": False}, r"'y0'.*a number.*False"),
        ("quadratic", {"d": 3.0}, r"'d'.*an integer.*3\.0"),
        ("quadratic", {"d": True}, r"'d'.*an integer.*True"),
        ("digits-mlp", {"activation": 3}, r"'activation'.*a string.*3"),
        ("cifar10-cnn", {"download": "yes"}, r"'download'.*true or false.*'yes'"),
    ],
)
def test_make_problem_checks_parameter_types(name, params, pattern):
    with pytest.raises(ef.ConfigError, match=pattern):
        ef.make_problem(name, **params)


def test_make_problem_accepts_an_int_for_a_float_and_anything_for_a_none_default():
    assert ef.make_problem("zhu", x0=2).w0.tolist() == [2.0, 0.2]
    p = ef.make_problem("teacher-deep-linear", n=4, d_in=2, d_out=1, width=2, chunk_size=2)
    assert p.info["chunk_size"] == 2


# ---------------------------------------------------------------------------------------- factories
FACTORY = """
import edgeflow as ef

def make(*, dtype, device, seed, scale=1.0):
    return ef.Problem.from_function(lambda w: 0.5 * scale * (w**2).sum(), [1.0, 2.0], dtype=dtype)

def anything(*, dtype, device, seed, **params):
    return ef.Problem.from_function(lambda w: (w**2).sum(), [float(len(params))], dtype=dtype)

def no_seed(*, dtype, device):
    return ef.Problem.from_function(lambda w: (w**2).sum(), [1.0], dtype=dtype)

def needs_scale(*, dtype, device, seed, scale):
    return ef.Problem.from_function(lambda w: scale * (w**2).sum(), [1.0], dtype=dtype)
"""


@pytest.fixture
def factories(importable_module):
    return importable_module("validation_factories", FACTORY)


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (["--param", "width=3"], ["unknown parameter 'width'", "valid parameters: scale"]),
        (["--download"], ["unknown parameter 'download'", "valid parameters: scale"]),
        (["--param", "scale=abc"], ["'scale'", "a number", "'abc'"]),
    ],
)
def test_factory_with_unknown_or_mistyped_params_is_one_clear_line(
    capsys, tmp_path, factories, flags, needles
):
    argv = ["run", "--problem", f"{factories}:make", "--lr", "0.1", "--steps", "2", *flags]
    assert_one_error_line(capsys, tmp_path, argv, needles)


def test_factory_signature_is_checked_unless_it_takes_kwargs(factories):
    with pytest.raises(ef.ConfigError, match=r"unknown parameter 'width'.*valid parameters: scale"):
        ef.make_problem(f"{factories}:make", width=3)
    with pytest.raises(ef.ConfigError, match=r"must take the keywords seed, dtype and device.*lacks seed"):
        ef.make_problem(f"{factories}:no_seed")
    with pytest.raises(ef.ConfigError, match=r"needs the parameter 'scale' \(--param scale=\.\.\.\)"):
        ef.make_problem(f"{factories}:needs_scale")
    assert ef.make_problem(f"{factories}:needs_scale", scale=2).dim == 1
    assert ef.make_problem(f"{factories}:anything", a=1, b="x").w0.tolist() == [2.0]
    assert ef.make_problem(f"{factories}:make", scale=2).dim == 2


# ------------------------------------------------------------------------------ Problem.from_function
def square(w):
    return (w**2).sum()


@pytest.mark.parametrize(
    ("w0", "kwargs", "pattern"),
    [
        ([[1.0, 2.0], [3.0, 4.0]], {}, r"w0 must be a 1-D parameter vector, got shape \(2, 2\)"),
        (torch.ones(2, 3), {}, r"1-D.*\(2, 3\)"),
        (3.0, {}, r"1-D.*got shape \(\)"),
        ([1.0, float("nan")], {}, r"w0 must be finite, got nan at index 1"),
        (torch.tensor([float("inf")]), {}, r"finite, got inf at index 0"),
        ([], {}, r"w0 is empty"),
        ([1j, 2.0], {}, r"w0 must be a 1-D sequence of real numbers"),
        (torch.tensor([1j, 2.0]), {}, r"w0 must be real.*complex64"),
        (torch.ones(2, dtype=torch.float16), {}, r"float32 or float64, got float16; pass dtype="),
        (torch.ones(2, dtype=torch.bfloat16), {}, r"float32 or float64, got bfloat16"),
        ([[1.0], [2.0, 3.0]], {}, r"1-D sequence of real numbers"),
        (torch.ones(2), {"dtype": "float16"}, r"unknown dtype 'float16'"),
    ],
)
def test_from_function_rejects_bad_w0(w0, kwargs, pattern):
    with pytest.raises(ef.ConfigError, match=pattern):
        ef.Problem.from_function(square, w0, **kwargs)


def test_from_function_accepts_lists_integers_and_a_dtype_for_half_precision():
    assert ef.Problem.from_function(square, [1, 2]).dtype == torch.float64
    assert ef.Problem.from_function(square, torch.tensor([1, 2])).dtype == torch.float64
    half = torch.ones(2, dtype=torch.float16)
    assert ef.Problem.from_function(square, half, dtype="float32").dtype == torch.float32


@pytest.mark.parametrize(
    ("fn", "w0", "pattern"),
    [
        (lambda w: w**2, [1.0, 2.0, 3.0], r"must return a scalar tensor, got shape \(3,\)"),
        (lambda w: (w**2).sum().reshape(1), [1.0], r"scalar tensor, got shape \(1,\)"),
        (lambda w: 1.0, [1.0], r"must return a scalar tensor, got float"),
        (lambda w: torch.log(w).sum(), [-1.0], r"must be finite at w0, got nan"),
        (lambda w: 1 / w.sum(), [0.0], r"must be finite at w0, got inf"),
        (3, [1.0], r"fn must be a function.*got int"),
    ],
)
def test_from_function_rejects_a_bad_loss(fn, w0, pattern):
    with pytest.raises(ef.ConfigError, match=pattern):
        ef.Problem.from_function(fn, w0)


# ------------------------------------------------------------------------------------ flow options
def test_options_for_a_flow_must_be_a_dict():
    prob = ef.make_problem("zhu")
    with pytest.raises(ef.ConfigError, match=r"options for flow 'edge' must be a dict.*got int: 3"):
        make_process("edge", prob, 0.1, 3)
    with pytest.raises(ef.ConfigError, match=r"options for flow 'edge'.*got list"):
        ef.compare(prob, 0.1, 2, ["gd", "edge"], options={"edge": ["substeps", 2]})
    assert prob.counts.grad == 0 and prob.counts.hvp == 0


# ------------------------------------------------------------------------------------ RK4 integrator
def x2_minus_y2(w: torch.Tensor) -> float:
    return float(w[0] ** 2 - w[1] ** 2)


@pytest.mark.parametrize("flow", ["gradient", "modified"])
def test_rk4_on_zhu_at_large_lr_integrates_finitely_or_raises(flow):
    # At η = 50 the radius grows from 0.85 to 18 within the first step: sub-steps sized at its start
    # overflow, and 4× as many stay finite but wrong. Gradient flow conserves x² − y² on zhu.
    prob = ef.make_problem("zhu")
    proc = make_process(flow, prob, 50.0)
    proc.init(prob.w0, 0)
    steps_done = 0
    with pytest.raises(ef.IntegrationError) as err:
        for _ in range(5):
            proc.step()
            assert torch.isfinite(proc.position).all()
            if flow == "gradient":
                assert x2_minus_y2(proc.position) == pytest.approx(x2_minus_y2(prob.w0), rel=1e-3)
            steps_done += 1
    assert not isinstance(err.value, ef.ConfigError) and isinstance(err.value, RuntimeError)
    assert f"--option {flow}.max_substeps=N" in str(err.value) and "smaller η" in str(err.value)
    assert torch.isfinite(proc.position).all()
    if flow == "gradient":
        assert steps_done == 2  # then the radius 18.4 at the minimum needs more than 1000 sub-steps
        assert re.search(r"step 3 needs 1\d{3} RK4 sub-steps", str(err.value))


def test_rk4_integrates_zhu_at_large_lr_with_a_larger_budget():
    prob = ef.make_problem("zhu")
    proc = make_process("gradient", prob, 50.0, {"max_substeps": 2000})
    proc.init(prob.w0, 0)
    for _ in range(3):
        proc.step()
    assert x2_minus_y2(proc.position) == pytest.approx(x2_minus_y2(prob.w0), rel=1e-4)
    assert float(prob.loss(proc.position)) < 1e-20


def test_rk4_over_budget_names_flow_step_radius_and_substeps():
    prob = ef.make_problem("zhu")
    proc = make_process("gradient", prob, 50.0, {"max_substeps": 10})
    proc.init(prob.w0, 0)
    before = prob.counts.grad
    with pytest.raises(ef.IntegrationError) as err:
        proc.step()
    msg = str(err.value)
    for needle in ["gradient:", "step 1", "needs 52 RK4 sub-steps", "radius 0.8529", "max_substeps = 10"]:
        assert needle in msg
    assert prob.counts.grad == before  # refused before integrating


def test_rk4_failing_within_budget_says_it_is_not_a_divergence():
    prob = ef.make_problem("zhu")
    proc = make_process("gradient", prob, 50.0, {"max_substeps": 100})
    proc.init(prob.w0, 0)
    w0 = proc.position.clone()
    with pytest.raises(ef.IntegrationError) as err:
        proc.step()
    msg = str(err.value)
    for needle in [
        "integrator failed at step 1",
        "52, 100 sub-steps",
        "radius 0.8529",
        "not the flow diverging",
    ]:
        assert needle in msg
    assert torch.equal(proc.position, w0)  # the failed step left the state alone
