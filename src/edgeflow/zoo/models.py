"""Models of the zoo (plain ``nn.Module``s; the oracle flattens their parameters).

Every derivative the oracle takes — gradients, HVPs and third-derivative contractions — comes from
``torch.func`` differentiating the forward pass up to three times, so the models are written in plain
tensor operations: a composite layer norm and attention written out as math, rather than fused kernels
(``F.layer_norm``, ``scaled_dot_product_attention``, ``nn.MultiheadAttention``) whose higher derivatives
are not reliable. Nothing hard-codes a dtype or a device: ``Problem.from_module`` moves the model.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

from edgeflow.errors import ConfigError, invalid_choice
from edgeflow.utils import positive_int

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "gelu": nn.GELU, "relu": nn.ReLU}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise invalid_choice("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]()


def _divisible(name: str, value: int, by_name: str, by: int) -> None:
    if value % by:
        choices = ", ".join(str(k) for k in range(1, value + 1) if value % k == 0)
        raise ConfigError(
            f"{name}={value} is not divisible by {by_name}={by}; valid {by_name} values: {choices}"
        )


def _flat(x: Tensor) -> Tensor:
    # Images (n, C, H, W) become vectors; 2-D batches (and single 1-D inputs) pass unchanged.
    return x.flatten(1) if x.ndim > 2 else x


class MLP(nn.Sequential):
    """``depth`` hidden layers of ``width`` units with ``activation``, then a linear read-out.

    Inputs with more than two dimensions (images) are flattened, so ``in_dim`` is then C·H·W.
    """

    def __init__(
        self, in_dim: int, out_dim: int, width: int = 64, depth: int = 2, activation: str = "tanh"
    ) -> None:
        if activation not in ACTIVATIONS:
            raise invalid_choice("activation", activation, ACTIVATIONS)
        in_dim = positive_int("in_dim", in_dim)
        out_dim = positive_int("out_dim", out_dim)
        width = positive_int("width", width)
        depth = positive_int("depth", depth)
        layers: list[nn.Module] = []
        dims = [in_dim] + [width] * depth
        for a, b in itertools.pairwise(dims):
            layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(dims[-1], out_dim))
        # No nn.Flatten layer: it would shift the parameter names ("0.weight" → "1.weight").
        super().__init__(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(_flat(x))


class DeepLinear(nn.Sequential):
    """A deep linear network: the product of ``depth`` weight matrices (no biases, no activations),
    in_dim → width → … → width → out_dim; ``depth=1`` is a single linear map. Inputs are flattened."""

    def __init__(self, in_dim: int, out_dim: int, width: int = 32, depth: int = 3) -> None:
        in_dim = positive_int("in_dim", in_dim)
        out_dim = positive_int("out_dim", out_dim)
        width = positive_int("width", width)
        depth = positive_int("depth", depth)
        dims = [in_dim] + [width] * (depth - 1) + [out_dim]
        super().__init__(*(nn.Linear(a, b, bias=False) for a, b in itertools.pairwise(dims)))

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(_flat(x))


class LayerNorm(nn.Module):
    """Layer norm over the last dimension, composed of plain tensor ops (equal to
    ``F.layer_norm``) so that its third derivatives come from autograd's elementary rules."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        dim = positive_int("dim", dim)
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        return _standardize(x, (-1,), self.eps) * self.weight + self.bias


def _standardize(x: Tensor, dims: tuple[int, ...], eps: float) -> Tensor:
    """``(x − mean) / √(var + eps)`` over ``dims``, in plain tensor ops (see ``LayerNorm``)."""
    centered = x - x.mean(dims, keepdim=True)
    var = (centered * centered).mean(dims, keepdim=True)  # biased, as in F.layer_norm
    return centered * torch.rsqrt(var + eps)


class ImageLayerNorm(nn.Module):
    """Layer norm of each image over (C, H, W) with a per-channel scale and shift (what
    ``F.group_norm`` computes with one group), composed of plain tensor ops like ``LayerNorm``.

    Per-example statistics keep the full-batch loss a plain mean over examples, which batch norm's
    batch statistics would not.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        channels = positive_int("channels", channels)
        self.eps = float(eps)
        # per channel rather than per pixel: the same parameters fit any image size
        self.weight = nn.Parameter(torch.ones(channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return _standardize(x, (-3, -2, -1), self.eps) * self.weight + self.bias


class SelfAttention(nn.Module):
    """Multi-head self-attention written out: softmax(QKᵀ/√d_head)V, then an output projection.

    ``causal=True`` lets position t attend only to positions ≤ t.
    """

    def __init__(self, dim: int, heads: int = 2, causal: bool = False) -> None:
        super().__init__()
        dim = positive_int("dim", dim)
        heads = positive_int("heads", heads)
        _divisible("dim", dim, "heads", heads)
        self.heads = heads
        self.causal = bool(causal)
        self.scale = 1.0 / math.sqrt(dim // heads)  # a Python float, so any dtype keeps its precision
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: Tensor) -> Tensor:
        n, T, dim = x.shape
        return x.reshape(n, T, self.heads, dim // self.heads).transpose(1, 2)  # (n, heads, T, d_head)

    def forward(self, x: Tensor) -> Tensor:
        n, T, dim = x.shape
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        scores = (q @ k.transpose(-2, -1)) * self.scale
        if self.causal:
            # Built from the static length T (no data-dependent control flow, so vmap is fine); the
            # diagonal is never masked, so no row is all -inf.
            future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        mixed = torch.softmax(scores, dim=-1) @ v
        return self.out(mixed.transpose(1, 2).reshape(n, T, dim))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(
        self, dim: int, heads: int = 2, mlp_ratio: int = 2, activation: str = "gelu", causal: bool = False
    ) -> None:
        super().__init__()
        hidden = positive_int("mlp_ratio", mlp_ratio) * positive_int("dim", dim)
        self.norm1 = LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, causal=causal)
        self.norm2 = LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), _activation(activation), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _blocks(dim: int, depth: int, heads: int, mlp_ratio: int, activation: str, causal: bool) -> nn.Sequential:
    depth = positive_int("depth", depth)
    return nn.Sequential(*(Block(dim, heads, mlp_ratio, activation, causal) for _ in range(depth)))


class CNN(nn.Module):
    """Two 3×3 convolutions (padding 1), each followed by ``activation`` and 2×2 average pooling,
    then flatten → ``width`` → ``activation`` → ``out_dim``.

    Takes square images (n, in_channels, image_size, image_size), or the same flattened to
    (n, in_channels·image_size²).
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        out_dim: int,
        channels: int = 32,
        width: int = 64,
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.image_size = positive_int("image_size", image_size)
        if self.image_size < 4:
            raise ConfigError(f"image_size={image_size} is too small for two 2×2 poolings; need ≥ 4")
        out_dim = positive_int("out_dim", out_dim)
        channels = positive_int("channels", channels)
        width = positive_int("width", width)
        pooled = self.image_size // 2 // 2  # average pooling floors odd sizes
        self.features = nn.Sequential(
            nn.Conv2d(self.in_channels, channels, 3, padding=1),
            _activation(activation),
            nn.AvgPool2d(2),
            nn.Conv2d(channels, channels, 3, padding=1),
            _activation(activation),
            nn.AvgPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * pooled * pooled, width),
            _activation(activation),
            nn.Linear(width, out_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], self.in_channels, self.image_size, self.image_size)
        return self.classifier(self.features(x))


NORMS = ("none", "layer")


def _image_norm(norm: str, channels: int) -> nn.Module:
    if norm not in NORMS:
        raise invalid_choice("norm", norm, NORMS)
    # nn.Identity has no parameters, so norm="none" adds none and shifts no names.
    return ImageLayerNorm(channels) if norm == "layer" else nn.Identity()


class ResidualBlock(nn.Module):
    """Pre-activation residual block: shortcut(x) + conv(act(norm(conv(act(norm(x)))))), both
    convolutions 3×3; the first one and a 1×1 shortcut convolution carry ``stride``.

    The last convolution starts scaled by ``branch_scale`` (weights and bias), so that without
    normalization the residual stream grows little over many blocks at initialization.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        norm: str = "none",
        activation: str = "gelu",
        branch_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.norm1 = _image_norm(norm, in_channels)
        self.act1 = _activation(activation)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
        self.norm2 = _image_norm(norm, out_channels)
        self.act2 = _activation(activation)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        with torch.no_grad():
            self.conv2.weight.mul_(branch_scale)
            self.conv2.bias.mul_(branch_scale)
        reshaped = stride != 1 or in_channels != out_channels
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride) if reshaped else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(self.act1(self.norm1(x)))
        return self.shortcut(x) + self.conv2(self.act2(self.norm2(h)))


class ResNet(nn.Module):
    """Small pre-activation ResNet without batch norm: a 3×3 stem convolution to ``channels``, then
    ``stages`` stages of ``blocks`` residual blocks, stage s with channels·2^s channels, each stage
    after the first halving the image (stride 2, rounding up, so odd sizes work); then norm → act →
    global average pooling → linear.

    ``norm="layer"`` puts an ``ImageLayerNorm`` before each activation; ``"none"`` (default) has
    none. Takes square images (n, in_channels, image_size, image_size), or the same flattened.
    """

    # GELU by default: EoS studies and the third-derivative flows want a smooth loss, and ReLU's
    # zero second derivative would leave the Hessian blind to the activations; GELU is the smooth
    # function closest to the ReLU that ResNets are designed around (tanh saturates instead).
    def __init__(
        self,
        in_channels: int,
        image_size: int,
        out_dim: int,
        channels: int = 16,
        stages: int = 3,
        blocks: int = 1,
        norm: str = "none",
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.image_size = positive_int("image_size", image_size)
        out_dim = positive_int("out_dim", out_dim)
        channels = positive_int("channels", channels)
        stages = positive_int("stages", stages)
        blocks = positive_int("blocks", blocks)
        if norm not in NORMS:
            raise invalid_choice("norm", norm, NORMS)
        if activation not in ACTIVATIONS:
            raise invalid_choice("activation", activation, ACTIVATIONS)
        # Past 1×1 a stride-2 stage only multiplies the channels; that many stages is a mistake.
        most = 1 + (self.image_size - 1).bit_length()
        if stages > most:
            raise ConfigError(
                f"stages={stages} would halve image_size={image_size} below 1×1; at most {most} stages"
            )
        # 1/√(number of blocks): the branches' variances then add up to about one branch's, whatever
        # the depth; small but not zero, so that every parameter moves the loss from the start.
        scale = 1.0 / math.sqrt(stages * blocks)
        self.stem = nn.Conv2d(self.in_channels, channels, 3, padding=1)
        layers: list[nn.Module] = []
        width = channels
        for s in range(stages):
            for b in range(blocks):
                stride = 2 if s > 0 and b == 0 else 1
                layers.append(ResidualBlock(width, channels * 2**s, stride, norm, activation, scale))
                width = channels * 2**s
        self.blocks = nn.Sequential(*layers)
        self.norm = _image_norm(norm, width)
        self.act = _activation(activation)
        self.head = nn.Linear(width, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], self.in_channels, self.image_size, self.image_size)
        h = self.act(self.norm(self.blocks(self.stem(x))))
        return self.head(h.mean((-2, -1)))


class ViT(nn.Module):
    """Small vision transformer: a linear embedding of non-overlapping ``patch_size`` patches plus a
    learned position embedding, ``depth`` pre-norm blocks, a final layer norm, mean pooling over the
    patches and a linear head. Takes square images (n, C, H, W), or the same flattened."""

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        in_channels: int,
        out_dim: int,
        dim: int = 32,
        depth: int = 2,
        heads: int = 2,
        mlp_ratio: int = 2,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        self.image_size = positive_int("image_size", image_size)
        self.patch_size = positive_int("patch_size", patch_size)
        self.in_channels = positive_int("in_channels", in_channels)
        out_dim = positive_int("out_dim", out_dim)
        dim = positive_int("dim", dim)
        _divisible("image_size", self.image_size, "patch_size", self.patch_size)
        self.grid = self.image_size // self.patch_size
        self.embed = nn.Linear(self.in_channels * self.patch_size**2, dim)
        # std 0.02 as in ViT; PyTorch has no default initialization for a bare parameter
        self.pos = nn.Parameter(0.02 * torch.randn(1, self.grid * self.grid, dim))
        self.blocks = _blocks(dim, depth, heads, mlp_ratio, activation, causal=False)
        self.norm = LayerNorm(dim)
        self.head = nn.Linear(dim, out_dim)

    def patches(self, x: Tensor) -> Tensor:
        """(n, C, H, W) → (n, patches, C·p²), patches in row-major order."""
        n, C, g, p = x.shape[0], self.in_channels, self.grid, self.patch_size
        x = x.reshape(n, C, g, p, g, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(n, g * g, C * p * p)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.embed(self.patches(x)) + self.pos
        return self.head(self.norm(self.blocks(tokens)).mean(1))


class Transformer(nn.Module):
    """Small decoder-only transformer on int64 tokens (n, T), T ≤ ``max_len``: token and learned
    position embeddings, ``depth`` causal pre-norm blocks, a final layer norm and a linear head.

    Returns logits (n, T, out_vocab), or only those of the last ``predict_last`` positions.
    """

    def __init__(
        self,
        vocab: int,
        max_len: int,
        out_vocab: int | None = None,
        dim: int = 32,
        depth: int = 2,
        heads: int = 2,
        mlp_ratio: int = 2,
        activation: str = "gelu",
        predict_last: int | None = None,
    ) -> None:
        super().__init__()
        vocab = positive_int("vocab", vocab)
        self.max_len = positive_int("max_len", max_len)
        out_vocab = vocab if out_vocab is None else positive_int("out_vocab", out_vocab)
        dim = positive_int("dim", dim)
        self.predict_last = None if predict_last is None else positive_int("predict_last", predict_last)
        if self.predict_last is not None and self.predict_last > self.max_len:
            raise ConfigError(f"predict_last={predict_last} exceeds max_len={max_len}")
        self.tokens = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(self.max_len, dim)
        self.blocks = _blocks(dim, depth, heads, mlp_ratio, activation, causal=True)
        self.norm = LayerNorm(dim)
        self.head = nn.Linear(dim, out_vocab)

    def forward(self, x: Tensor) -> Tensor:
        T = x.shape[1]
        if T > self.max_len:
            raise ConfigError(f"sequence length {T} exceeds max_len={self.max_len}")
        if self.predict_last is not None and self.predict_last > T:
            raise ConfigError(f"predict_last={self.predict_last} exceeds the sequence length {T}")
        h = self.blocks(self.tokens(x) + self.pos.weight[:T])
        if self.predict_last is not None:
            h = h[:, T - self.predict_last :]  # the head only reads the scored positions
        return self.head(self.norm(h))


def seeded_init(build, seed: int) -> nn.Module:
    """Build a module with PyTorch's default initialization drawn from ``seed``, leaving the global
    random state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()
