"""Small decoder-only transformers on synthetic sequence tasks (sorting, copying), cross-entropy."""

from __future__ import annotations

from collections.abc import Callable

from edgeflow.zoo import data, models
from edgeflow.zoo.network import Network, network_problem


def _sequence_transformer(task: str) -> Callable:
    def describe(
        *,
        seed: int,
        n: int = 256,
        length: int = 4,
        vocab: int = 8,
        dim: int = 32,
        depth: int = 2,
        heads: int = 2,
        mlp_ratio: int = 2,
        activation: str = "gelu",
    ) -> Network:
        X, Y = data.sequence_task(task, n=n, length=length, vocab=vocab, seed=seed)
        return lambda: models.Transformer(
            vocab + 1,  # the separator token is `vocab`
            max_len=2 * length,
            out_vocab=vocab,
            dim=dim,
            depth=depth,
            heads=heads,
            mlp_ratio=mlp_ratio,
            activation=activation,
            predict_last=length,
        ), (X, Y)

    return network_problem(f"{task}-transformer", describe, loss="ce")


sort_transformer = _sequence_transformer("sort")
copy_transformer = _sequence_transformer("copy")
