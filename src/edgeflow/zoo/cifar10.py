"""CIFAR-10 from the official binary distribution (``cifar-10-binary.tar.gz``), read without unpickling.

Each batch file is a sequence of 3073-byte records: one label byte (0–9), then 3072 pixel bytes,
1024 red, 1024 green and 1024 blue, each plane a row-major 32×32 image.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

from edgeflow.errors import ConfigError, invalid_choice
from edgeflow.utils import positive_int
from edgeflow.zoo.data import balanced_subset, standardize

ARCHIVE = "cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
RECORD = 3073
CLASSES = 10
SPLITS: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}


def default_root() -> Path:
    """``$EDGEFLOW_DATA`` or ``~/.cache/edgeflow``, read at call time so tests and users can redirect it."""
    return Path(os.environ.get("EDGEFLOW_DATA") or "~/.cache/edgeflow").expanduser()


def cifar10(
    root: str | os.PathLike | None = None,
    n: int = 1000,
    classes: int = 10,
    seed: int = 0,
    split: str = "train",
    download: bool = False,
) -> tuple[Tensor, Tensor]:
    """A class-balanced subset of CIFAR-10 standardized per feature over the subset: ``X`` is
    ``(n, 3, 32, 32)`` float64 (channels R, G, B), ``y`` int64.

    ``root`` is ``cifar-10-binary.tar.gz`` itself, the extracted ``cifar-10-batches-bin`` folder, or a
    folder holding either (default: ``default_root()``). With ``download=True`` a missing archive is
    fetched from ``URL`` and checked against ``MD5``; without it nothing is ever downloaded.
    """
    if split not in SPLITS:
        raise invalid_choice("split", split, SPLITS)
    n = positive_int("n", n)
    classes = positive_int("classes", classes)
    base = Path(root).expanduser() if root is not None else default_root()
    source = _find(base)
    if source is None:
        if not download:
            raise _missing(base)
        target = base if base.name.endswith(".tar.gz") else base / ARCHIVE
        download_cifar10(target)
        source = target
    records = _read_split(source, SPLITS[split])
    labels = np.concatenate([r[:, 0] for r in records]).astype(np.int64)
    idx = balanced_subset(labels, n, classes, seed)
    # Gather the chosen rows file by file instead of concatenating all 150 MB of the train split.
    starts = np.cumsum([0] + [len(r) for r in records])
    file_of = np.searchsorted(starts, idx, side="right") - 1
    pixels = np.empty((len(idx), RECORD - 1), dtype=np.uint8)
    for f, rec in enumerate(records):
        mask = file_of == f
        pixels[mask] = rec[idx[mask] - starts[f], 1:]
    X = standardize(pixels.astype(np.float64)).reshape(len(idx), 3, 32, 32)
    return torch.from_numpy(np.ascontiguousarray(X)), torch.from_numpy(labels[idx])


def _find(base: Path) -> Path | None:
    """The archive or extracted folder that ``base`` names or contains; an extracted folder wins
    because it needs no decompression."""
    if base.is_file():
        return base
    if not base.is_dir():
        return None
    if (base / FOLDER).is_dir():
        return base / FOLDER
    batch_names = {name for names in SPLITS.values() for name in names}
    if base.name == FOLDER or any((base / name).is_file() for name in batch_names):
        return base
    if (base / ARCHIVE).is_file():
        return base / ARCHIVE
    return None


def _missing(base: Path) -> ConfigError:
    archive = base if base.name.endswith(".tar.gz") else base / ARCHIVE
    searched = [archive] if archive == base else [base / FOLDER, archive]
    return ConfigError(
        f"CIFAR-10 not found (searched {', '.join(str(p) for p in searched)}); put {ARCHIVE} at {archive} "
        f"(or point $EDGEFLOW_DATA or root at it), or pass --download (download=True) to fetch it from {URL}"
    )


def _read_split(source: Path, names: tuple[str, ...]) -> list[np.ndarray]:
    """The batch files ``names`` as ``(records, 3073)`` uint8 arrays, validated."""
    if source.is_dir():
        out = []
        for name in names:
            path = source / name
            if not path.is_file():
                raise ConfigError(f"CIFAR-10 batch file {path} is missing")
            out.append(_parse(path.read_bytes(), str(path)))
        return out
    found = _tar_members(source, set(names))
    missing = [name for name in names if name not in found]
    if missing:
        raise ConfigError(f"{source} has no {FOLDER}/{missing[0]}; is it the CIFAR-10 binary archive?")
    return [_parse(found[name], f"{source}:{FOLDER}/{name}") for name in names]


def _tar_members(archive: Path, wanted: set[str]) -> dict[str, bytes]:
    """Contents of the members whose base name is in ``wanted``, read in archive order so a gzip
    stream is decompressed once, front to back, and no further than the last wanted member."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = PurePosixPath(member.name).name
                if member.isfile() and name in wanted and name not in found:
                    f = tar.extractfile(member)
                    assert f is not None  # a regular file always has contents
                    found[name] = f.read()
                    if len(found) == len(wanted):
                        break
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        reason = " ".join(str(e).split())  # tarfile's "r:*" lists one line per compression it tried
        raise ConfigError(
            f"cannot read {archive}: corrupt or truncated archive ({reason}); delete it and download it again"
        ) from None
    return found


def _parse(raw: bytes, where: str) -> np.ndarray:
    if len(raw) == 0 or len(raw) % RECORD:
        raise ConfigError(
            f"{where} has {len(raw)} bytes, not a positive multiple of the {RECORD}-byte CIFAR-10 record "
            f"(truncated or not a CIFAR-10 binary batch)"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD)
    bad = np.flatnonzero(records[:, 0] >= CLASSES)
    if len(bad):
        raise ConfigError(
            f"{where}: record {bad[0]} has label byte {records[bad[0], 0]}; CIFAR-10 labels are 0–9 "
            f"(corrupt file or another dataset)"
        )
    return records


def _open_url(url: str) -> tuple[BinaryIO, int | None]:
    """The response stream and its announced size; a seam for tests, which must not touch the network."""
    response = urllib.request.urlopen(url, timeout=60)
    size = response.headers.get("Content-Length")
    return response, int(size) if size else None


def download_cifar10(target: str | os.PathLike | None = None) -> Path:
    """Download ``cifar-10-binary.tar.gz`` to ``target`` (default ``default_root()/cifar-10-binary.tar.gz``)
    and check its md5; the file appears only once complete and verified (temporary file, then rename)."""
    from tqdm.auto import tqdm

    target = Path(target).expanduser() if target is not None else default_root() / ARCHIVE
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response, size = _open_url(URL)
                with (
                    response,
                    tqdm(total=size, unit="B", unit_scale=True, desc=f"downloading {ARCHIVE}") as bar,
                ):
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
            except (urllib.error.URLError, OSError) as e:
                raise ConfigError(
                    f"could not download {URL} ({e}); fetch it by hand and put it at {target}"
                ) from None
        if digest.hexdigest() != MD5:
            raise ConfigError(
                f"downloaded {URL} has md5 {digest.hexdigest()}, expected {MD5}; not saved to {target}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
