"""Image classifiers: an MLP on scikit-learn digits, and a CNN, a ViT and a ResNet on MNIST-5k and on
a CIFAR-10 subset. Each data set and each architecture declares its parameters once, with their
defaults; the registry's ``ProblemSpec.params`` may shrink them to CPU size."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from edgeflow.zoo import cifar10, data, models
from edgeflow.zoo.network import Network, image_classifier, network_problem


def _digits_mlp(
    *,
    seed: int,
    n: int = 500,
    classes: int = 10,
    width: int = 64,
    depth: int = 2,
    activation: str = "tanh",
) -> Network:
    X, y = data.digits(n=n, classes=classes, seed=seed)
    return lambda: models.MLP(X.shape[1], classes, width=width, depth=depth, activation=activation), (X, y)


# ------------------------------------------------------------------ data sets: (X, y), X (n, C, H, W)


def _mnist5k(*, seed: int, n: int = 1000, classes: int = 10) -> tuple[Tensor, Tensor]:
    return data.mnist5k(n=n, classes=classes, seed=seed)


def _cifar10(
    *, seed: int, root: str | None = None, download: bool = False, n: int = 1000, classes: int = 10
) -> tuple[Tensor, Tensor]:
    return cifar10.cifar10(root, n=n, classes=classes, seed=seed, download=download)


# ------------------------------------------------- architectures, sized from the images X themselves


def _cnn(
    X: Tensor, classes: int, *, channels: int = 32, width: int = 64, activation: str = "tanh"
) -> Callable[[], nn.Module]:
    return lambda: models.CNN(
        X.shape[1], X.shape[-1], classes, channels=channels, width=width, activation=activation
    )


def _vit(
    X: Tensor,
    classes: int,
    *,
    patch_size: int = 7,
    dim: int = 32,
    depth: int = 2,
    heads: int = 2,
    mlp_ratio: int = 2,
    activation: str = "gelu",
) -> Callable[[], nn.Module]:
    blocks = {"dim": dim, "depth": depth, "heads": heads, "mlp_ratio": mlp_ratio, "activation": activation}
    return lambda: models.ViT(X.shape[-1], patch_size, X.shape[1], classes, **blocks)


def _resnet(
    X: Tensor,
    classes: int,
    *,
    channels: int = 16,
    stages: int = 3,
    blocks: int = 1,
    norm: str = "none",
    activation: str = "gelu",
) -> Callable[[], nn.Module]:
    shape = {"channels": channels, "stages": stages, "blocks": blocks, "norm": norm, "activation": activation}
    return lambda: models.ResNet(X.shape[1], X.shape[-1], classes, **shape)


digits_mlp = network_problem("digits-mlp", _digits_mlp)
mnist5k_cnn = network_problem("mnist5k-cnn", image_classifier(_mnist5k, _cnn))
mnist5k_vit = network_problem("mnist5k-vit", image_classifier(_mnist5k, _vit))
mnist5k_resnet = network_problem("mnist5k-resnet", image_classifier(_mnist5k, _resnet))
cifar10_cnn = network_problem("cifar10-cnn", image_classifier(_cifar10, _cnn))
cifar10_vit = network_problem("cifar10-vit", image_classifier(_cifar10, _vit))
cifar10_resnet = network_problem("cifar10-resnet", image_classifier(_cifar10, _resnet))
