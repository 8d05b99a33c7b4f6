"""HDF5 storage of results: streamed while a run computes, readable during and after it, even after a
crash.

Layout of ``results.h5``: one group per flow with 1-D datasets over records (``step``,
``train_loss``, ``sharpness``, the flow's own fields; a vector field such as ``hessian_eigs`` is
records × k) and, when saved, ``params`` (rows × d) with ``params_step``; the group's ``info``
attribute is JSON (costs, divergence, options). Group ``distances`` holds ``<a>-<b>`` datasets over
its ``step`` dataset. Root attributes: ``format``, ``lr``, ``config`` (JSON), ``complete`` (whether
the run reached its last step), ``resumed_from`` (the steps at which it was resumed).

While a run computes, records are buffered and appended in batches: each flush opens the file,
switches it to HDF5's single-writer/multiple-reader (SWMR) mode, appends and closes. Between flushes
the file is closed, so any HDF5 reader opens it; a process killed during a flush leaves a file that
SWMR readers (``h5py.File(path, "r", swmr=True)``, and ``load``) still open, with every record of
the earlier flushes. The writer takes no HDF5 file lock, so a reader that holds the file open never
stops a run.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from edgeflow.errors import ConfigError, StorageError
from edgeflow.results import DISTANCES, FlowRecord, Result
from edgeflow.rundir import RESULTS

FORMAT = "edgeflow-results/1"
#: fields that have their own record axis (``params`` are stored every N records)
PARAMS = ("params", "params_step")


class ResultsFileError(ConfigError):
    """A results file is missing, damaged or not an edgeflow results file."""


def as_array(field: str, values: Iterable, params_dtype: str | None = None) -> np.ndarray:
    """Records of one field as the array stored for it: steps as int64, parameters in
    ``params_dtype`` (default float64), every other measurement as float64."""
    if field in ("step", "params_step"):
        return np.asarray(list(values), dtype=np.int64)
    if field == "params":
        return np.asarray(list(values), dtype=params_dtype or np.float64)
    return np.asarray(list(values), dtype=np.float64)


class MemoryRecords:
    """Collects a run's records in memory (``compare`` without a run directory)."""

    def __init__(self, groups: Iterable[str], params_dtype: str | None = None) -> None:
        self.rows: dict[str, dict[str, list]] = {g: {} for g in groups}
        self.params_dtype = params_dtype

    def append(self, group: str, row: dict[str, Any]) -> None:
        for field, value in row.items():
            self.rows[group].setdefault(field, []).append(value)

    def arrays(self, group: str) -> dict[str, np.ndarray]:
        return {f: as_array(f, v, self.params_dtype) for f, v in self.rows[group].items()}

    def due(self) -> bool:
        return False

    def flush(self, infos: dict[str, dict] | None = None) -> None:
        """Nothing to write; the interface matches ``ResultsWriter``."""

    def finish(self, infos: dict[str, dict], complete: bool) -> None:
        """Nothing to write; the interface matches ``ResultsWriter``."""


class NoRecords(MemoryRecords):
    """Where the records of a rank other than 0 go in a data-parallel run: nowhere (rank 0 keeps
    the identical ones)."""

    def append(self, group: str, row: dict[str, Any]) -> None:
        pass


class ResultsWriter:
    """Streams records into ``results.h5``: at most ``flush_every`` records, or ``flush_seconds`` of
    computation, are held in memory before they are appended to the file."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        flush_every: int = 20,
        flush_seconds: float = 30.0,
        params_dtype: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        self.params_dtype = params_dtype
        self.buffer: dict[str, dict[str, list]] = {}
        self.buffered = 0
        self.last_flush = time.monotonic()
        self.written: dict[str, dict[str, int]] = {}
        #: why HDF5 failed to write this file (then it is not called for it again), "" while it has not
        self.broken = ""

    @classmethod
    def create(
        cls, path: str | os.PathLike, lr: float, config: dict, groups: Iterable[str], **kw
    ) -> ResultsWriter:
        """A new file with the root attributes and one empty group per flow (and ``distances``)."""
        writer = cls(path, **kw)
        tmp = writer.path.with_name(writer.path.name + ".tmp")
        with h5py.File(tmp, "w", libver="latest", track_order=True, locking=False) as f:
            _write_root(f, lr, config, complete=False, resumed_from=[])
            for g in groups:
                f.create_group(g, track_order=True).attrs["info"] = "{}"
        os.replace(tmp, writer.path)
        writer.written = {g: {} for g in groups}
        return writer

    @classmethod
    def reopen(
        cls, path: str | os.PathLike, counts: dict[str, dict[str, int]], resumed_from: int, **kw
    ) -> ResultsWriter:
        """Continue a file after a crash or interrupt: it is rewritten holding exactly the first
        ``counts[group][field]`` records of each dataset (those of the checkpoint being resumed, at
        step ``resumed_from``; later ones are computed again). Rewriting also clears the flag that a
        killed SWMR writer leaves in the file."""
        writer = cls(path, **kw)
        old = load(writer.path)
        tmp = writer.path.with_name(writer.path.name + ".tmp")
        with h5py.File(tmp, "w", libver="latest", track_order=True, locking=False) as f:
            _write_root(f, old.lr, old.config, complete=False, resumed_from=[*old.resumed_from, resumed_from])
            for group, fields in counts.items():
                g = f.create_group(group, track_order=True)
                source = old.distances if group == DISTANCES else old.flows[group]
                g.attrs["info"] = json.dumps(getattr(source, "info", {}))
                for field, n in fields.items():
                    have = len(source[field]) if field in source else 0
                    if have < n:
                        raise ResultsFileError(
                            f"{writer.path} holds {have} records of {group}/{field}, fewer than the "
                            f"{n} of the checkpoint; the file does not belong to this checkpoint"
                        )
                    _create(g, field, source[field][:n])
        os.replace(tmp, writer.path)
        writer.written = {g: dict(fields) for g, fields in counts.items()}
        return writer

    def append(self, group: str, row: dict[str, Any]) -> None:
        fields = self.buffer.setdefault(group, {})
        for field, value in row.items():
            fields.setdefault(field, []).append(value)
        self.buffered += 1

    def due(self) -> bool:
        return self.buffered >= self.flush_every or (
            self.buffered > 0 and time.monotonic() - self.last_flush >= self.flush_seconds
        )

    def flush(self, infos: dict[str, dict] | None = None) -> None:
        """Append the buffered records (and update the groups' ``info`` attributes, if given).

        Raises ``StorageError`` without touching the file when its file system lacks the room the
        appends may take: HDF5 that runs out of space mid-write leaves its library in a state where
        the next call crashed the process (a segfault), and the file with a half-written chunk."""
        if not self.buffered and not infos:
            return
        if self.broken:
            raise StorageError(self.path, self.broken)
        ensure_space(self.path, self._bytes_needed())
        try:
            self._append(infos)
        except (OSError, RuntimeError) as err:
            # Never call into HDF5 for this file again in this process (see above).
            self.broken = _cause(err)
            raise StorageError(self.path, self.broken) from None
        self.buffer = {}
        self.buffered = 0
        self.last_flush = time.monotonic()

    def _bytes_needed(self) -> int:
        """What the buffered records take on disk at most: the chunks they open (HDF5 allocates a
        chunk whole when its first row is written), plus room for the file's metadata."""
        total = 64 * 1024
        for group, fields in self.buffer.items():
            for field, values in fields.items():
                item = np.dtype(self.params_dtype or np.float64).itemsize if field == "params" else 8
                row = int(np.size(values[0])) if values else 1
                rows = _rows_per_chunk(row)
                have = self.written.get(group, {}).get(field, 0)
                opened = -(-(have + len(values)) // rows) - -(-have // rows)
                total += opened * rows * row * item
        return total

    def _append(self, infos: dict[str, dict] | None) -> None:
        with h5py.File(self.path, "a", libver="latest", locking=False) as f:
            # Attributes and new datasets can only be written outside SWMR mode.
            for group, info in (infos or {}).items():
                f[group].attrs["info"] = json.dumps(info)
            for group, fields in self.buffer.items():
                for field, values in fields.items():
                    if field not in f[group]:
                        _create(f[group], field, as_array(field, values[:1], self.params_dtype)[:0])
            f.swmr_mode = True
            for group, fields in self.buffer.items():
                # `step` last: a flush cut short leaves no step without its measurements.
                for field in sorted(fields, key=lambda name: name == "step"):
                    data = as_array(field, fields[field], self.params_dtype)
                    ds = f[group][field]
                    n = ds.shape[0]
                    ds.resize(n + len(data), axis=0)
                    ds[n:] = data
                    self.written[group][field] = n + len(data)

    def counts(self) -> dict[str, dict[str, int]]:
        """Records on disk per group and field (call after ``flush``)."""
        return {g: dict(fields) for g, fields in self.written.items()}

    def finish(self, infos: dict[str, dict], complete: bool) -> None:
        self.flush(infos)
        try:
            with h5py.File(self.path, "a", libver="latest", locking=False) as f:
                f.attrs["complete"] = complete
        except (OSError, RuntimeError) as err:
            self.broken = _cause(err)
            raise StorageError(self.path, self.broken) from None


#: free space kept on top of a write's estimate: a full file system fails in odd places
SPARE_BYTES = 256 * 1024


def ensure_space(path: Path, needed: int) -> None:
    """Raise ``StorageError`` unless ``path``'s file system has ``needed`` bytes (and ``SPARE_BYTES``)."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return  # nothing to go by: the write itself will say
    if free < needed + SPARE_BYTES:
        room = f"{free / 2**20:.1f} MiB free, about {needed / 2**20:.1f} MiB needed"
        raise StorageError(path, f"no space left on the device ({room})")


def _cause(err: BaseException) -> str:
    text = str(err)
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    if "errno = 28" in text or "No space left" in text:
        return "no space left on the device"
    if "errno = 30" in text or "Read-only file system" in text:
        return "read-only file system"
    return text.splitlines()[0] if text else type(err).__name__


def _write_root(f: h5py.File, lr: float, config: dict, *, complete: bool, resumed_from: list[int]) -> None:
    f.attrs["format"] = FORMAT
    f.attrs["lr"] = lr
    f.attrs["config"] = json.dumps(config)
    f.attrs["complete"] = complete
    f.attrs["resumed_from"] = np.asarray(resumed_from, dtype=np.int64)
    # the optimizer (GD for runs from before the optimizer layer) and its threshold on λ₁(P⁻¹H)
    f.attrs["optimizer"] = config.get("optimizer", "gd")
    f.attrs["optimizer_options"] = json.dumps(config.get("optimizer_options", {}))
    f.attrs["threshold"] = float(config.get("threshold", 2.0))


def _create(group: h5py.Group, field: str, data: np.ndarray) -> None:
    """A dataset resizable along its record axis, chunked so appends touch few chunks."""
    row = data.shape[1:]
    rows = _rows_per_chunk(int(np.prod(row)))
    group.create_dataset(field, data=data, maxshape=(None, *row), chunks=(rows, *row))


def _rows_per_chunk(row_size: int) -> int:
    return max(1, min(1024, 2**16 // max(1, row_size)))


def save(res: Result, path: str | os.PathLike) -> Path:
    """Write a whole ``Result`` to a temporary file, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w", libver="latest", track_order=True, locking=False) as f:
        _write_root(f, res.lr, res.config, complete=res.complete, resumed_from=res.resumed_from)
        for name, record in res.flows.items():
            g = f.create_group(name, track_order=True)
            g.attrs["info"] = json.dumps(record.info)
            for field, values in record.items():
                _create(g, field, np.asarray(values))
        g = f.create_group(DISTANCES, track_order=True)
        for key, values in res.distances.items():
            _create(g, key, np.asarray(values))
    os.replace(tmp, path)
    return path


def load(path: str | os.PathLike, *, params: bool = True) -> Result:
    """Read a ``results.h5`` (or the one in a run directory) — also while a run is writing it, or
    after the run was killed: every dataset of a group is cut to the records all of them hold.
    ``params=False`` skips the stored parameters (the largest datasets by far)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    if not path.is_file():
        raise ResultsFileError(
            f"{path} does not exist; give a results.h5 or a directory written by `edgeflow run`"
        )
    try:
        f = _open(path)
    except OSError:
        raise ResultsFileError(
            f"{path} is not a readable HDF5 file (truncated, damaged or another format)"
        ) from None
    try:
        with f:
            if f.attrs.get("format") != FORMAT:
                raise ResultsFileError(
                    f"{path} is not an edgeflow results file (no format {FORMAT!r} attribute)"
                )
            flows: dict[str, FlowRecord] = {}
            distances: dict[str, np.ndarray] = {}
            for name, g in f.items():
                data = _read_group(g, params)
                if name == DISTANCES:
                    distances = data
                else:
                    flows[name] = FlowRecord(data, _info(g, data))
            res = Result(float(f.attrs["lr"]), flows, distances, json.loads(f.attrs["config"]))
            res.complete = bool(f.attrs.get("complete", True))
            res.resumed_from = [int(k) for k in f.attrs.get("resumed_from", [])]
            return res
    except ResultsFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise ResultsFileError(f"{path} is damaged or incomplete: {err}") from None


def _open(path: Path, attempts: int = 30) -> h5py.File:
    """Open for reading, also while a run appends to the file: a file that a running (or killed)
    writer holds in SWMR mode opens only as an SWMR reader, and in the instant a flush starts it
    opens as neither, so that is tried again. Any other failure is final: a truncated file above all
    (SWMR readers retry its reads without end)."""
    for _ in range(attempts):
        try:
            return h5py.File(path, "r")
        except OSError as err:
            if not _held_by_writer(err):
                raise
        try:
            return h5py.File(path, "r", swmr=True)
        except OSError as err:
            if not _held_by_writer(err):
                raise
        time.sleep(0.05)
    raise OSError(f"{path} stayed busy: a writer held it for {attempts * 0.05:.1f} s")


def _held_by_writer(err: OSError) -> bool:
    signs = ("already open for write", "unable to lock file", "not already open for SWMR writing")
    return any(sign in str(err) for sign in signs)


def _read_group(g: h5py.Group, params: bool) -> dict[str, np.ndarray]:
    names = [n for n in g if params or n not in PARAMS]
    data = {n: np.asarray(g[n][()]) for n in names}
    for family in ([n for n in data if n not in PARAMS], [n for n in data if n in PARAMS]):
        if family:
            n = min(len(data[f]) for f in family)
            for f in family:
                data[f] = data[f][:n]
    return data


def _info(g: h5py.Group, data: dict[str, np.ndarray]) -> dict:
    """The group's info; a run killed before it wrote any gets the defaults its records imply."""
    info = json.loads(g.attrs.get("info", "{}"))
    if info:
        return info
    steps = data.get("step", np.array([], dtype=np.int64))
    zero = {"loss": 0, "grad": 0, "hvp": 0, "third": 0}
    return {
        "diverged_at": None,
        "steps_completed": int(steps[-1]) if len(steps) else 0,
        "cost": zero,
        "init_cost": zero,
        "measurement_cost": zero,
        "wall_time": 0.0,
        "options": {},
    }
