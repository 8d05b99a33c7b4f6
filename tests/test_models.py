"""Zoo models: shapes, causality, the composite layer norm, and their oracle derivatives (HVPs and
third-derivative contractions) against finite differences, all in float64 at tiny sizes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import edgeflow as ef
from conftest import (
    assert_hvp_matches_finite_differences,
    assert_third_matches_finite_differences,
    random_point,
    rel,
)
from edgeflow.errors import ConfigError
from edgeflow.zoo import models

N = 5  # examples
CLASSES = 3
VOCAB, SEQ, SCORED = 5, 7, 3  # the transformer reads 7 tokens and is scored at the last 3


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(channels: int = 1, size: int = 8, n: int = N) -> Tensor:
    return torch.randn(n, channels, size, size, generator=_gen(1), dtype=torch.float64)


def labels(*shape: int, classes: int = CLASSES) -> Tensor:
    return torch.randint(classes, shape, generator=_gen(2))


def tokens(n: int = N, length: int = SEQ) -> Tensor:
    return torch.randint(VOCAB, (n, length), generator=_gen(3))


# name → (model builder, inputs, integer labels); every model is tiny (d ≤ ~800). The ViT has dim 8: at
# dim 4 its first layer norm sees tokens with spreads down to 0.1, and the finite differences lose accuracy.
CASES: dict[str, Callable[[], tuple[torch.nn.Module, Tensor, Tensor]]] = {
    "mlp-images": lambda: (models.MLP(16, CLASSES, width=5, depth=1), images(size=4), labels(N)),
    "deep-linear": lambda: (
        models.DeepLinear(16, CLASSES, width=4, depth=3),
        images(size=4),
        labels(N),
    ),
    "cnn": lambda: (models.CNN(1, 8, CLASSES, channels=2, width=4), images(), labels(N)),
    "vit": lambda: (
        models.ViT(8, 4, 1, CLASSES, dim=8, depth=1, heads=2, mlp_ratio=2),
        images(),
        labels(N),
    ),
    "transformer": lambda: (
        models.Transformer(VOCAB, SEQ, dim=4, depth=1, heads=2, mlp_ratio=2, predict_last=SCORED),
        tokens(),
        labels(N, SCORED, classes=VOCAB),
    ),
}
LAYER_NORM_CASES = ["vit", "transformer"]


def make_problem(case: str, loss: str) -> ef.Problem:
    model, X, Y = models.seeded_init(CASES[case], seed=0)
    return ef.Problem.from_module(model, (X, Y), loss=loss, dtype="float64")


# ------------------------------------------------------------------------------------------- shapes
def test_forward_shapes():
    with torch.no_grad():
        assert models.MLP(16, 3, width=4).double()(images(size=4)).shape == (N, 3)
        assert models.DeepLinear(16, 3, width=4).double()(images(size=4)).shape == (N, 3)
        assert models.DeepLinear(6, 2, depth=1)(torch.randn(N, 6)).shape == (N, 2)
        for channels in (1, 3):
            cnn = models.CNN(channels, 8, 3, channels=2, width=4).double()
            assert cnn(images(channels)).shape == (N, 3)
            assert cnn(images(channels).flatten(1)).shape == (N, 3)  # flattened images too
        vit = models.ViT(8, 4, 3, 3, dim=4, depth=1).double()
        assert vit.patches(images(3)).shape == (N, 4, 3 * 16)
        assert vit(images(3)).shape == (N, 3)
        full = models.Transformer(VOCAB, SEQ, dim=4, depth=1).double()
        assert full(tokens()).shape == (N, SEQ, VOCAB)
        last = models.Transformer(VOCAB, SEQ, out_vocab=2, dim=4, depth=1, predict_last=SCORED).double()
        assert last(tokens()).shape == (N, SCORED, 2)
        assert last(tokens(length=4)).shape == (N, SCORED, 2)  # shorter sequences are fine


@pytest.mark.parametrize("case", list(CASES))
def test_models_follow_the_problem_dtype(case):
    model, X, Y = models.seeded_init(CASES[case], seed=0)
    for dtype in (torch.float32, torch.float64):
        problem = ef.Problem.from_module(model, (X, Y), loss="ce", dtype=dtype)
        assert problem.w0.dtype == dtype
        assert problem.grad(problem.w0).dtype == dtype
        assert torch.isfinite(problem.loss(problem.w0))


def test_patches_are_the_non_overlapping_blocks():
    vit = models.ViT(8, 4, 2, 3, dim=4, depth=1)
    x = images(2)
    p = vit.patches(x)
    # patch 1 is the top-right 4×4 block of every channel
    torch.testing.assert_close(p[:, 1], x[:, :, :4, 4:].reshape(N, -1), rtol=0, atol=0)
    torch.testing.assert_close(p[:, 2], x[:, :, 4:, :4].reshape(N, -1), rtol=0, atol=0)


def test_suggested_mnist_and_cifar_sizes():
    with torch.no_grad():
        cnn = models.CNN(1, 28, 10)
        assert cnn(torch.randn(2, 1, 28, 28)).shape == (2, 10)
        assert sum(p.numel() for p in cnn.parameters()) == 110_634
        cifar = models.CNN(3, 32, 10)
        assert cifar(torch.randn(2, 3, 32, 32)).shape == (2, 10)
        vit = models.ViT(28, 7, 1, 10)
        assert vit(torch.randn(2, 1, 28, 28)).shape == (2, 10)
        assert sum(p.numel() for p in vit.parameters()) == 19_594


def test_mlp_on_vectors_is_unchanged():
    mlp = models.seeded_init(lambda: models.MLP(5, 3, width=6, depth=2), seed=0)
    names = [k for k, _ in mlp.named_parameters()]
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    x = torch.randn(4, 5)
    expected = x
    for layer in mlp:
        expected = layer(expected)
    torch.testing.assert_close(mlp(x), expected, rtol=0, atol=0)
    assert mlp(x[0]).shape == (3,)  # a single unbatched vector still works


def test_seeded_init_is_deterministic():
    build = CASES["transformer"]
    a, b, c = (models.seeded_init(build, seed)[0] for seed in (0, 0, 1))
    wa, wb, wc = (torch.cat([p.reshape(-1) for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


def test_causality():
    model = models.seeded_init(lambda: models.Transformer(VOCAB, SEQ, dim=4, depth=2), seed=0).double()
    x = tokens()
    changed = x.clone()
    t = 4
    changed[:, t] = (changed[:, t] + 1) % VOCAB
    with torch.no_grad():
        before, after = model(x), model(changed)
    torch.testing.assert_close(after[:, :t], before[:, :t], rtol=0, atol=0)
    assert (after[:, t:] - before[:, t:]).abs().amin(dim=-1).gt(0).all()  # later positions do see it


# --------------------------------------------------------------------------------------- layer norm
def test_layer_norm_equals_functional():
    gen = _gen(4)
    ln = models.LayerNorm(6).double()
    with torch.no_grad():
        ln.weight.copy_(torch.randn(6, generator=gen, dtype=torch.float64))
        ln.bias.copy_(torch.randn(6, generator=gen, dtype=torch.float64))
    x = 3 * torch.randn(4, 5, 6, generator=gen, dtype=torch.float64) + 1
    expected = F.layer_norm(x, (6,), ln.weight, ln.bias, eps=1e-5)
    torch.testing.assert_close(ln(x), expected, rtol=1e-13, atol=1e-13)


# -------------------------------------------------------------------------------- oracle derivatives
@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("case", list(CASES))
def test_hvp_matches_central_differences_of_grad(case, loss):
    problem = make_problem(case, loss)
    assert problem.dtype == torch.float64
    assert_hvp_matches_finite_differences(problem)


@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("case", LAYER_NORM_CASES)
def test_third_matches_central_differences_of_hvp(case, loss):
    assert_third_matches_finite_differences(make_problem(case, loss))


@pytest.mark.parametrize("case", ["cnn", "transformer"])
def test_vmapped_grads_equal_stacked_grads(case):
    problem = make_problem(case, "ce")
    W = torch.stack([random_point(problem, seed=s) for s in range(3)])
    expected = torch.stack([problem.grad(w) for w in W])
    assert rel(problem.grads(W), expected) < 1e-12


def test_sequence_labels_are_scored_per_position():
    problem = make_problem("transformer", "ce")
    model, X, Y = models.seeded_init(CASES["transformer"], seed=0)
    with torch.no_grad():
        logits = model.double()(X)
    expected = F.cross_entropy(logits.reshape(-1, VOCAB), Y.reshape(-1))
    assert float(problem.loss(problem.w0)) == pytest.approx(float(expected), rel=1e-12)


# ------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda: models.ViT(8, 3, 1, 3), ["patch_size=3", "image_size=8", "1, 2, 4, 8"]),
        (lambda: models.ViT(8, 4, 1, 3, dim=6, heads=4), ["dim=6", "heads=4", "1, 2, 3, 6"]),
        (lambda: models.Transformer(5, 7, dim=5, heads=2), ["dim=5", "heads=2", "1, 5"]),
        (lambda: models.Transformer(5, 7, predict_last=8), ["predict_last=8", "max_len=7"]),
        (lambda: models.Transformer(5, 7, depth=0), ["depth", "0"]),
        (lambda: models.CNN(1, 2, 3), ["image_size=2"]),
        (lambda: models.CNN(1, 8, 3, channels=-2), ["channels", "-2"]),
        (lambda: models.ViT(8, 4, 1, 3, mlp_ratio=1.5), ["mlp_ratio", "1.5"]),
        (lambda: models.DeepLinear(4, 3, width=0), ["width", "0"]),
        (lambda: models.MLP(4, 0), ["out_dim", "0"]),
        (lambda: models.LayerNorm(0), ["dim", "0"]),
    ],
)
def test_bad_sizes_raise_config_error(build, words):
    with pytest.raises(ConfigError) as info:
        build()
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    "build",
    [
        lambda a: models.MLP(4, 3, activation=a),
        lambda a: models.CNN(1, 8, 3, activation=a),
        lambda a: models.ViT(8, 4, 1, 3, activation=a),
        lambda a: models.Transformer(5, 7, activation=a),
        lambda a: models.Block(4, activation=a),
    ],
)
def test_bad_activation_raises_config_error(build):
    with pytest.raises(ConfigError, match=r"'swish'.*tanh, gelu, relu"):
        build("swish")


def test_transformer_rejects_sequences_longer_than_max_len():
    model = models.Transformer(VOCAB, 4, dim=4, depth=1)
    with pytest.raises(ConfigError, match="sequence length 7 exceeds max_len=4"):
        model(tokens())
