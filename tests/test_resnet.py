"""The batch-norm-free ResNet: shapes and downsampling, its composite image layer norm, its oracle
derivatives (HVPs and third-derivative contractions) against finite differences in float64 at a tiny
size, argument errors, and its two registered problems."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import edgeflow as ef
from conftest import (
    assert_hvp_matches_finite_differences,
    assert_third_matches_finite_differences,
)
from edgeflow.errors import ConfigError
from edgeflow.zoo import make_problem, models

N, CLASSES = 6, 3


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(channels: int = 3, size: int = 8, n: int = N) -> Tensor:
    return torch.randn(n, channels, size, size, generator=_gen(1), dtype=torch.float64)


def tiny(norm: str = "none", **kwargs) -> models.ResNet:
    build = {"in_channels": 3, "image_size": 8, "out_dim": CLASSES, "channels": 2, "stages": 2}
    return models.seeded_init(lambda: models.ResNet(**{**build, "norm": norm, **kwargs}), seed=0).double()


def tiny_problem(norm: str, loss: str) -> ef.Problem:
    labels = torch.randint(CLASSES, (N,), generator=_gen(2))
    return ef.Problem.from_module(tiny(norm), (images(), labels), loss=loss, dtype="float64")


# ------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("size", [8, 7, 9, 5])
def test_square_and_flattened_images_of_any_size(size):
    model = tiny(image_size=size)
    with torch.no_grad():
        out = model(images(size=size))
        assert out.shape == (N, CLASSES)
        torch.testing.assert_close(model(images(size=size).flatten(1)), out, rtol=0, atol=0)


def test_stages_halve_the_image_rounding_up_and_double_the_channels():
    model = tiny(image_size=9, stages=3, blocks=2)
    h = model.stem(images(size=9))
    sizes = []
    for block in model.blocks:
        h = block(h)
        sizes.append(tuple(h.shape[1:]))
    assert sizes == [(2, 9, 9), (2, 9, 9), (4, 5, 5), (4, 5, 5), (8, 3, 3), (8, 3, 3)]
    # only the first block of a later stage reshapes, and only its shortcut is a convolution
    kinds = [type(block.shortcut).__name__ for block in model.blocks]
    assert kinds == ["Identity", "Identity", "Conv2d", "Identity", "Conv2d", "Identity"]
    assert [block.conv1.stride for block in model.blocks] == [(1, 1), (1, 1), (2, 2), (1, 1), (2, 2), (1, 1)]


def test_examples_do_not_see_each_other():
    # the point of leaving out batch norm: each output depends on its own image only
    for norm in models.NORMS:
        model = tiny(norm)
        with torch.no_grad():
            torch.testing.assert_close(model(images())[:2], model(images()[:2]), rtol=1e-14, atol=1e-14)


def test_residual_branches_start_small_but_not_zero():
    model = tiny(stages=2, blocks=2)
    scale = 1 / math.sqrt(4)
    for block in model.blocks.requires_grad_(False):
        bound = 1 / math.sqrt(block.conv2.weight[0].numel())  # PyTorch's default uniform bound
        assert 0 < float(block.conv2.weight.abs().max()) <= scale * bound
        assert float(block.conv1.weight.abs().max()) > scale * bound  # the first conv is not scaled


def test_parameter_counts_at_the_problem_defaults():
    cifar = models.ResNet(3, 32, 10, channels=8)
    assert sum(p.numel() for p in cifar.parameters()) == 19_786
    mnist = models.ResNet(1, 28, 10, channels=8, norm="layer")
    # a per-channel scale and shift in each block's two norms (8→8, 8→16, 16→32) and the final one
    assert sum(p.numel() for p in mnist.parameters()) == 19_642 + 2 * (8 + 8 + 8 + 16 + 16 + 32 + 32)


# --------------------------------------------------------------------------------------- image norm
def test_image_layer_norm_is_layer_norm_over_channels_and_pixels():
    gen = _gen(4)
    norm = models.ImageLayerNorm(3).double()
    with torch.no_grad():
        norm.weight.copy_(torch.randn(3, 1, 1, generator=gen, dtype=torch.float64))
        norm.bias.copy_(torch.randn(3, 1, 1, generator=gen, dtype=torch.float64))
    x = 3 * torch.randn(4, 3, 5, 6, generator=gen, dtype=torch.float64) + 1
    var, mean = torch.var_mean(x, dim=(1, 2, 3), keepdim=True, correction=0)
    expected = (x - mean) / torch.sqrt(var + 1e-5) * norm.weight + norm.bias
    torch.testing.assert_close(norm(x), expected, rtol=1e-13, atol=1e-13)
    # the same as group norm with a single group
    grouped = F.group_norm(x, 1, norm.weight.flatten(), norm.bias.flatten(), eps=1e-5)
    torch.testing.assert_close(norm(x), grouped, rtol=1e-13, atol=1e-13)


# -------------------------------------------------------------------------------- oracle derivatives
@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("norm", ["none", "layer"])
def test_hvp_matches_central_differences_of_grad(norm, loss):
    problem = tiny_problem(norm, loss)
    assert_hvp_matches_finite_differences(problem)


@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("norm", ["none", "layer"])
def test_third_matches_central_differences_of_hvp(norm, loss):
    assert_third_matches_finite_differences(tiny_problem(norm, loss))


# ------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"channels": 0}, ["channels", "0"]),
        ({"stages": 0}, ["stages", "0"]),
        ({"blocks": 1.5}, ["blocks", "1.5"]),
        ({"image_size": -8}, ["image_size", "-8"]),
        ({"out_dim": 0}, ["out_dim", "0"]),
        ({"norm": "batch"}, ["'batch'", "none, layer"]),
        ({"activation": "swish"}, ["'swish'", "tanh, gelu, relu"]),
        ({"stages": 5}, ["stages=5", "image_size=8", "at most 4"]),
    ],
)
def test_bad_arguments_raise_config_error(kwargs, words):
    with pytest.raises(ConfigError) as info:
        models.ResNet(**{"in_channels": 3, "image_size": 8, "out_dim": 3, **kwargs})
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_registry_passes_model_options_through():
    problem = make_problem("mnist5k-resnet", n=10, channels=2, stages=2, norm="layer", activation="tanh")
    assert problem.dtype == torch.float32
    assert any(k.endswith("norm1.weight") for k in problem.unflatten(problem.w0))
    with pytest.raises(ConfigError, match=r"'batch'.*none, layer"):
        make_problem("mnist5k-resnet", n=10, norm="batch")
