"""Simulation campaigns and the on-disk simulation bank (DESIGN.md §6; comparison-study spec §2.1, §7).

A *campaign* draws θ from the entry's prior, simulates the entry's summary features and appends
the pairs, chunk by chunk, to a *bank* on disk. One bank per (entry, entry version, model
configuration, prior, simulator settings, seed, stream); budgets are nested: the budget-b training
set is the bank's first b rows (:meth:`Bank.first`), so budgets are paired and a larger campaign
extends a smaller one instead of starting over.

Store
-----
A bank lives in ``<cache>/banks/<entry>-<key[:16]>/`` (``<cache>`` is ``MECHZOO_CACHE``, default
``platformdirs.user_cache_dir("mechzoo")``)::

    bank.json                                  identity: key, key content, names, θ block size
    chunks/000000000000-000000001024.nc        rows [0, 1024)
    chunks/000000001024-000000002048.nc        rows [1024, 2048) ...

Each chunk is one netCDF-4 (HDF5) file written with ``h5netcdf`` holding ``theta`` (rows, D)
float64, ``x`` (rows, F) float64, ``valid`` (rows,) int8 (1 where every feature is finite),
``sim_seed`` (rows,) uint64 and, as attributes, its row range and cost (``wall_s`` and ``cpu_s``
measured inside the worker around seed derivation and simulation, host, pid).

*Why netCDF chunk files rather than one zarr array.* The commit of a chunk must be atomic and
must never touch rows already written. With one self-describing file per chunk, a chunk is
written under a temporary name (``chunks/.tmp-…``), flushed to disk (``fsync``) and then
``os.replace``-d to its final name, a single atomic operation on POSIX and Windows; a crash
leaves at most a stray temporary file, which readers ignore (and later campaigns delete once it
is stale). Appending to one zarr array instead rewrites the array metadata (its shape) in place
and needs a separate commit record for the chunks. netCDF also needs only the core dependencies
(``h5netcdf``; zarr is an optional extra), and every chunk opens with
``xarray.open_dataset(..., engine="h5netcdf")`` for inspection. The file name *is* the commit
record: a chunk exists exactly when its final-named file does, so there is no manifest to keep
consistent and chunks may be committed in any order (a process pool or Dask finishes them out of
order). Only the driver process writes; workers return arrays. Hence no shared filesystem is
needed with a remote Dask cluster, and there are never two writers in one campaign. The cost is
one small file per chunk (about 100 files for 10⁵ simulations at the default chunk size), read
once per :class:`Bank`.

Resume
------
Rows that already have a committed chunk are never recomputed nor rewritten; a rerun computes
exactly the missing row ranges (in pieces of ``chunk_size``) and, because every row depends only
on (seed, stream, row index), the result is bit-identical to an uninterrupted run, whatever the
chunk sizes, worker count or executor of the runs that produced it.

Seeds
-----
* Simulation seed of row i: ``seeds_for(seed, n, stream=stream, offset=...)[i]``, i.e. a function
  of (seed, stream, i) only.
* θ of row i: rows are grouped in fixed *blocks* of :data:`THETA_BLOCK` = 256 rows (a constant of
  the bank format, recorded in ``bank.json``, unrelated to ``chunk_size``). Block k is drawn in
  one call of the torch prior's ``sample_seeded(THETA_BLOCK, s_k)`` with
  ``s_k = SeedSequence(seed, spawn_key=(sha256("mechzoo.campaign.theta/" + stream) words, k))``;
  row i is row ``i % 256`` of block ``i // 256``. A block is always drawn whole (torch's samplers
  use different code paths for different sizes, so a partial draw would not be a prefix of the
  full one; checked: the first 256 rows of a 300-row draw differ from a 256-row draw); a chunk
  whose edges fall inside a block draws the block and slices it, so only chunk sizes that are
  multiples of 256 avoid drawing an edge block twice (the default 1024 does). One
  ``sample_seeded`` call costs about 1 ms (it forks torch's RNG state), so per-row calls would
  cost more than many simulators; blocks amortise it. The θ seed derivation uses a
  longer spawn key than :func:`~mechzoo.inference.problem.seeds_for`, so θ seeds can never
  coincide with simulation seeds.

θ from the torch prior is reproducible for a given torch version; the bank records the torch
version in ``bank.json`` (it is not part of the key).

Executors
---------
``executor=None`` / ``"local"``: a ``concurrent.futures.ProcessPoolExecutor`` with the *spawn*
start method and ``workers`` processes (default: the CPUs available to this process), each
limited to one BLAS/OpenMP thread; ``workers=1`` (or a single pending chunk) runs in-process. A
Dask scheduler address (str), ``distributed.Client`` (or anything ``Client()`` accepts, such as a
``LocalCluster``) runs the chunks as Dask tasks keyed by bank key and row range. Both executors
call the same chunk function and give identical banks.

The driver draws θ (cheap; so workers never import torch) and sends each chunk's θ with the task;
the worker derives the simulation seeds, simulates and returns the arrays; the driver commits.
A :class:`~mechzoo.inference.problem.Problem` holds a module object, which does not pickle, so
workers receive its parts (entry id and hash, parameters, model module *name*, config) and
rebuild it once per process; observed data are not sent. A problem whose ``simulate_features``
was overridden on the instance (e.g. monkeypatched) runs in-process, with a warning. With spawn,
scripts that start a local campaign need the usual ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime as _dt
import hashlib
import importlib
import json
import math
import os
import re
import socket
import sys
import time
import traceback
import uuid
import warnings
from collections import deque
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .priors import ParameterSpec
from .cache import cache_dir
from .problem import Problem, seeds_for

__all__ = [
    "Bank",
    "BankError",
    "SimulationError",
    "InjectedFailure",
    "THETA_BLOCK",
    "FORMAT_VERSION",
    "run_campaign",
    "open_bank",
    "bank_key",
    "bank_dir",
    "cache_dir",
    "theta_rows",
]

#: Rows per θ block (fixed for the bank format; see the module docstring, "Seeds").
THETA_BLOCK = 256
#: Version of the on-disk layout; part of the bank key.
FORMAT_VERSION = 1
#: Default rows per chunk (a multiple of :data:`THETA_BLOCK`).
DEFAULT_CHUNK_SIZE = 1024
#: Temporary chunk files older than this many seconds are left-overs of a crash and are deleted.
STALE_TMP_S = 600.0

_CHUNK_RE = re.compile(r"^(\d{12})-(\d{12})\.nc$")
_TMP_PREFIX = ".tmp-"


class BankError(RuntimeError):
    """A bank on disk is inconsistent with the request (different identity, unreadable chunk)."""


class SimulationError(RuntimeError):
    """The simulator failed on a chunk; names the row range and carries the worker's traceback.

    Parameters
    ----------
    message : str
        Description including the row range and the original exception.
    start, stop : int, optional
        The failing chunk's row range [start, stop).
    """

    def __init__(self, message: str, start: int | None = None, stop: int | None = None):
        super().__init__(message)
        self.start = start
        self.stop = stop

    def __reduce__(self):
        return (type(self), (self.args[0], self.start, self.stop))


class InjectedFailure(RuntimeError):
    """Raised by :func:`run_campaign` when its test hook ``fail_after_chunks`` fires."""


# ============================================================================ keys and paths
_cache_root = cache_dir  # the shared resolution of the zoo cache folder


def _jsonable(obj: Any) -> Any:
    """Convert ``obj`` to plain JSON types (numpy scalars/arrays, tuples, mappings)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)  # JSON has no inf/nan; keep them distinguishable
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot put {type(obj).__name__} {obj!r} into a bank key; use plain numbers, strings, lists or dicts")


def _canonical_json(obj: Any) -> str:
    return json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _parameter_content(p: ParameterSpec) -> dict[str, Any]:
    return {
        "name": p.name,
        "prior": {"kind": type(p.prior).kind or type(p.prior).__name__, "args": p.prior.args},
        "dims": list(p.dims),
        "coords": {d: list(p.coords[d]) for d in p.dims},
    }


def bank_key(
    problem: Problem, *, seed: int, stream: str = "simulate", settings: Mapping[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    """The bank's content key: SHA-256 (hex) of the canonical JSON of what determines its rows.

    The content is the entry id and hash, the model module and its full configuration, the prior
    of every free parameter, the simulator ``settings``, the seed, the stream, the θ block size
    and the format version. The number of rows and the chunk size are *not* part of it: a bank
    grows, and its rows do not depend on chunking.

    Parameters
    ----------
    problem : Problem
    seed : int
        Root seed of the campaign.
    stream : str
        Named seed stream (``"simulate"`` for training banks, ``"calib"`` for held-out sets, ...).
    settings : mapping, optional
        Further simulator settings that change the simulations but are not in ``problem.config``
        (e.g. a feature-set name). Plain JSON types only.

    Returns
    -------
    key : str
        64 hex characters.
    content : dict
        What was hashed (stored in ``bank.json``).
    """
    content = {
        "kind": "mechzoo-simulation-bank",
        "format_version": FORMAT_VERSION,
        "theta_block": THETA_BLOCK,
        "entry_id": problem.entry_id,
        "entry_hash": problem.entry_hash,
        "model": getattr(problem.model, "__name__", str(problem.model)),
        "config": problem.config,
        "parameters": [_parameter_content(p) for p in problem.parameters],
        "settings": dict(settings or {}),
        "seed": int(seed),
        "stream": str(stream),
    }
    if problem.pinned:  # only when some parameters are pinned, so that existing keys are unchanged
        content["pinned"] = {k: np.asarray(v).tolist() for k, v in sorted(problem.pinned.items())}
    content = _jsonable(content)
    return hashlib.sha256(_canonical_json(content).encode()).hexdigest(), content


def bank_dir(
    problem: Problem,
    *,
    seed: int,
    stream: str = "simulate",
    settings: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Directory of the bank for (problem, seed, stream, settings) under the cache.

    Returns
    -------
    pathlib.Path
        ``<cache>/banks/<entry>-<key[:16]>``.
    """
    key, _ = bank_key(problem, seed=seed, stream=stream, settings=settings)
    return _cache_root(cache_dir) / "banks" / f"{problem.entry_id}-{key[:16]}"


# ============================================================================ seeds and θ
def _theta_stream_words(stream: str) -> tuple[int, ...]:
    digest = hashlib.sha256(f"mechzoo.campaign.theta/{stream}".encode()).digest()
    return tuple(int.from_bytes(digest[4 * i : 4 * i + 4], "little") for i in range(4))


def _theta_block_seed(seed: int, stream: str, block: int) -> int:
    """Torch seed of θ block ``block`` (63 bits; depends on (seed, stream, block) only)."""
    ss = np.random.SeedSequence(entropy=int(seed), spawn_key=(*_theta_stream_words(stream), int(block)))
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def theta_rows(prior, seed: int, stream: str, start: int, stop: int) -> np.ndarray:
    """Prior draws for rows [start, stop) of the bank of (seed, stream), shape (stop-start, D).

    Row i depends only on (seed, stream, i): it is row ``i % THETA_BLOCK`` of block
    ``i // THETA_BLOCK``, drawn whole with ``prior.sample_seeded(THETA_BLOCK, block_seed)``.

    Parameters
    ----------
    prior : JointPrior
        The torch prior (``problem.torch_prior()``).
    seed : int
    stream : str
    start, stop : int
        Row range.

    Returns
    -------
    ndarray of float64
    """
    if stop <= start:
        return np.empty((0, int(prior.event_shape[0])), dtype=np.float64)
    b0, b1 = start // THETA_BLOCK, (stop - 1) // THETA_BLOCK + 1
    blocks = [prior.sample_seeded(THETA_BLOCK, _theta_block_seed(seed, stream, b)).numpy() for b in range(b0, b1)]
    rows = np.concatenate(blocks, axis=0).astype(np.float64, copy=False)
    off = b0 * THETA_BLOCK
    return np.ascontiguousarray(rows[start - off : stop - off])


# ============================================================================ the chunk function
@dataclasses.dataclass(frozen=True)
class _ProblemSpec:
    """The picklable parts of a :class:`Problem` (its module travels by name)."""

    token: str
    entry_id: str
    entry_hash: str
    parameters: tuple[ParameterSpec, ...]
    module: str
    config: dict[str, Any]
    pinned: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, problem: Problem, token: str) -> "_ProblemSpec":
        name = getattr(problem.model, "__name__", None)
        if not name:
            raise TypeError(f"the model of {problem.entry_id!r} is not an importable module; run the campaign with workers=1")
        return cls(token, problem.entry_id, problem.entry_hash, tuple(problem.parameters), name, dict(problem.config),
                   {k: np.asarray(v) for k, v in problem.pinned.items()})

    def build(self) -> Problem:
        try:
            module = importlib.import_module(self.module)
        except ImportError as exc:
            raise ImportError(
                f"worker cannot import the model module {self.module!r} of {self.entry_id!r} ({exc}); "
                "make it importable on the workers or run the campaign with workers=1"
            ) from exc
        return Problem(
            entry_id=self.entry_id,
            parameters=list(self.parameters),
            model=module,
            config=dict(self.config),
            observed={},
            data_name="campaign",
            entry_hash=self.entry_hash,
            pinned=dict(self.pinned),
        )


# per-process cache of the rebuilt problem, keyed by bank key
_WORKER_PROBLEMS: dict[str, Problem] = {}
_THREAD_LIMITS: list[Any] = []


def _compute_chunk(problem: Problem, theta: np.ndarray, seed: int, stream: str, start: int, stop: int) -> dict[str, Any]:
    """Simulate the features of rows [start, stop) at ``theta``; returns arrays and cost."""
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        sim_seeds = seeds_for(seed, stop - start, stream=stream, offset=start)
        x = np.asarray(problem.simulate_features(theta, sim_seeds), dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != stop - start:
            raise ValueError(f"simulate_features returned shape {x.shape}; expected ({stop - start}, n_features)")
    except Exception as exc:
        raise SimulationError(
            f"simulation of {problem.entry_id!r} rows [{start}, {stop}) (seed={seed}, stream={stream!r}) failed: "
            f"{type(exc).__name__}: {exc}\n--- worker traceback ---\n{traceback.format_exc()}",
            start,
            stop,
        ) from exc
    return {
        "start": start,
        "stop": stop,
        "theta": theta,
        "x": x,
        "sim_seed": sim_seeds,
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


def _remote_chunk(spec: _ProblemSpec, theta: np.ndarray, seed: int, stream: str, start: int, stop: int) -> dict[str, Any]:
    """The chunk function as run in a pool or Dask worker (rebuilds the problem once per process)."""
    problem = _WORKER_PROBLEMS.get(spec.token)
    if problem is None:
        _WORKER_PROBLEMS.clear()
        problem = _WORKER_PROBLEMS[spec.token] = spec.build()
    return _compute_chunk(problem, theta, seed, stream, start, stop)


def _init_pool_worker(threads: int) -> None:
    """Pool initializer: pin numerical libraries (loaded now or later) to ``threads`` threads."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(threads)
    try:
        from threadpoolctl import threadpool_limits

        _THREAD_LIMITS.append(threadpool_limits(limits=threads))
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    if "torch" in sys.modules:  # pragma: no cover - only if something imported it already
        sys.modules["torch"].set_num_threads(threads)


# ============================================================================ the store
def _chunk_name(start: int, stop: int) -> str:
    return f"{start:012d}-{stop:012d}.nc"


def _scan_chunks(chunks_dir: Path) -> list[tuple[int, int, Path]]:
    """Committed chunks (start, stop, path), sorted; temporary files are ignored."""
    out = []
    if chunks_dir.is_dir():
        for p in chunks_dir.iterdir():
            m = _CHUNK_RE.match(p.name)
            if m and int(m.group(2)) > int(m.group(1)):
                out.append((int(m.group(1)), int(m.group(2)), p))
    out.sort(key=lambda t: (t[0], -t[1]))
    return out


def _cover(chunks: Sequence[tuple[int, int, Path]], upto: int | None = None) -> tuple[list[tuple[int, int, Path]], int]:
    """A chain of chunks covering [0, end) contiguously; returns (chain, end).

    Overlapping chunks (possible only when two campaigns ran on one bank at once) hold identical
    rows; the chain takes, at each row, the chunk reaching furthest.
    """
    chain, pos, i = [], 0, 0
    while upto is None or pos < upto:
        best = None
        while i < len(chunks) and chunks[i][0] <= pos:
            if chunks[i][1] > pos and (best is None or chunks[i][1] > best[1]):
                best = chunks[i]
            i += 1
        # chunks starting before pos but skipped earlier cannot reach further than the chosen one
        if best is None:
            break
        chain.append(best)
        pos = best[1]
    return chain, pos


def _missing(chunks: Sequence[tuple[int, int, Path]], n: int, chunk_size: int) -> list[tuple[int, int]]:
    """Row ranges of [0, n) without a committed chunk, in pieces of at most ``chunk_size``."""
    covered = sorted((a, b) for a, b, _ in chunks)
    gaps, pos = [], 0
    for a, b in covered:
        if a > pos:
            gaps.append((pos, min(a, n)))
        pos = max(pos, b)
        if pos >= n:
            break
    if pos < n:
        gaps.append((pos, n))
    out = []
    for a, b in gaps:
        for s in range(a, b, chunk_size):
            out.append((s, min(b, s + chunk_size)))
    return [(a, b) for a, b in out if b > a]


def _fsync_path(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:  # e.g. directories on Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_path(path.parent, directory=True)


def _write_chunk(chunks_dir: Path, key: str, result: Mapping[str, Any]) -> Path:
    """Write one chunk under a temporary name, fsync, then rename it to its final name."""
    import h5netcdf

    start, stop = int(result["start"]), int(result["stop"])
    theta, x = result["theta"], result["x"]
    final = chunks_dir / _chunk_name(start, stop)
    tmp = chunks_dir / f"{_TMP_PREFIX}{start:012d}-{stop:012d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.nc"
    valid = np.all(np.isfinite(x), axis=1)
    try:
        with h5netcdf.File(tmp, "w") as f:
            f.dimensions = {"row": stop - start, "parameter": theta.shape[1], "feature": x.shape[1]}
            for name, dims, arr, dtype in (
                ("row", ("row",), np.arange(start, stop, dtype=np.int64), "i8"),
                ("theta", ("row", "parameter"), theta, "f8"),
                ("x", ("row", "feature"), x, "f8"),
                ("valid", ("row",), valid.astype(np.int8), "i1"),
                ("sim_seed", ("row",), np.asarray(result["sim_seed"], dtype=np.uint64), "u8"),
            ):
                v = f.create_variable(name, dims, dtype)
                v[...] = arr
            f.attrs.update(
                {
                    "bank_key": key,
                    "start": start,
                    "stop": stop,
                    "n_invalid": int((~valid).sum()),
                    "wall_s": float(result["wall_s"]),
                    "cpu_s": float(result["cpu_s"]),
                    "host": str(result["host"]),
                    "pid": int(result["pid"]),
                    "written_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                }
            )
        _fsync_path(tmp)
        os.replace(tmp, final)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    _fsync_path(chunks_dir, directory=True)
    return final


def _clean_stale_tmp(chunks_dir: Path, older_than_s: float = STALE_TMP_S) -> int:
    """Delete temporary chunk files left by crashed writers (older than ``older_than_s``)."""
    n, now = 0, time.time()
    if chunks_dir.is_dir():
        for p in chunks_dir.iterdir():
            if p.name.startswith(_TMP_PREFIX):
                try:
                    if now - p.stat().st_mtime > older_than_s:
                        p.unlink()
                        n += 1
                except OSError:
                    pass
    return n


def _attr(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value (netCDF stores scalars as 1-element arrays)."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(())[()]
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode()
    return value.item() if isinstance(value, np.generic) else value


def _read_chunk(path: Path, arrays: bool = True) -> dict[str, Any]:
    """Read a chunk file (with ``h5py``: the files are netCDF-4/HDF5, and h5py opens them ~10x
    faster than h5netcdf, which matters when a bank has thousands of chunks)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            out: dict[str, Any] = {"attrs": {k: _attr(v) for k, v in f.attrs.items() if not k.startswith("_")}}
            if arrays:
                out["theta"] = np.asarray(f["theta"][...], dtype=np.float64)
                out["x"] = np.asarray(f["x"][...], dtype=np.float64)
                out["valid"] = np.asarray(f["valid"][...]).astype(bool)
                out["sim_seed"] = np.asarray(f["sim_seed"][...], dtype=np.uint64)
            return out
    except Exception as exc:
        raise BankError(f"chunk file {path} is unreadable ({type(exc).__name__}: {exc}); delete it and rerun the campaign to recompute its rows") from exc


class _Store:
    """A bank directory: identity (``bank.json``) and committed chunks; loads rows lazily."""

    def __init__(self, path: Path):
        self.path = Path(path)
        meta_path = self.path / "bank.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"no simulation bank at {self.path} (missing bank.json); run run_campaign first")
        self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        self.chunks_dir = self.path / "chunks"
        self._rows = 0
        self._data: dict[str, np.ndarray] | None = None
        self._costs: list[dict[str, Any]] = []
        self.refresh()

    def refresh(self) -> None:
        self.chain, self.n_rows = _cover(_scan_chunks(self.chunks_dir))
        self._data, self._rows, self._costs = None, 0, []

    def load(self, n: int) -> dict[str, np.ndarray]:
        """Arrays of the first ``n`` committed rows (read once, then cached)."""
        if n > self.n_rows:
            raise ValueError(f"the bank at {self.path} holds {self.n_rows} contiguous rows; asked for {n}")
        if self._data is None or self._rows < n:
            parts, costs, pos = [], [], 0
            for a, b, p in self.chain:
                if pos >= n:
                    break
                c = _read_chunk(p)
                if c["theta"].shape[0] != b - a:
                    raise BankError(f"chunk file {p} holds {c['theta'].shape[0]} rows, its name says {b - a}; delete it and rerun")
                lo, hi = pos - a, min(b, n) - a
                parts.append({k: c[k][lo:hi] for k in ("theta", "x", "valid", "sim_seed")})
                costs.append({"start": a, "stop": b, "file": p.name, **{k: c["attrs"].get(k) for k in ("wall_s", "cpu_s", "host", "pid", "n_invalid")}})
                pos = min(b, n)
            data = {k: np.concatenate([q[k] for q in parts], axis=0) for k in ("theta", "x", "valid", "sim_seed")} if parts else None
            if data is None:
                d, f = len(self.meta["names"]), len(self.meta["feature_names"])
                data = {"theta": np.empty((0, d)), "x": np.empty((0, f)), "valid": np.empty(0, bool), "sim_seed": np.empty(0, np.uint64)}
            for arr in data.values():
                arr.setflags(write=False)
            self._data, self._rows, self._costs = data, n, costs
        return self._data

    def costs(self, n: int) -> list[dict[str, Any]]:
        """Per-chunk cost records of the chunks covering rows [0, n)."""
        if self._data is not None and self._rows >= n:
            return [c for c in self._costs if c["start"] < n]
        out = []
        for a, b, p in self.chain:
            if a >= n:
                break
            attrs = _read_chunk(p, arrays=False)["attrs"]
            out.append({"start": a, "stop": b, "file": p.name, **{k: attrs.get(k) for k in ("wall_s", "cpu_s", "host", "pid", "n_invalid")}})
        return out


# ============================================================================ the bank object
class Bank:
    """The first ``n`` rows of a simulation bank on disk (read lazily, then kept in memory).

    Attributes
    ----------
    path : pathlib.Path
        The bank directory.
    key : str
        Content key (64 hex characters; see :func:`bank_key`).
    n : int
        Rows in this view.
    names, feature_names : list of str
        Flat parameter names (``w[E,I]``) and feature names.
    seed : int
    stream : str
    """

    def __init__(self, store: _Store, n: int | None = None):
        self._store = store
        self.n = store.n_rows if n is None else int(n)
        if not 0 <= self.n <= store.n_rows:
            raise ValueError(f"the bank at {store.path} holds {store.n_rows} contiguous rows; asked for {self.n}")

    # ------------------------------------------------------------ construction
    @classmethod
    def open(cls, path: str | os.PathLike, n: int | None = None) -> "Bank":
        """Open the bank directory ``path`` (its contiguous committed rows, or the first ``n``)."""
        return cls(_Store(Path(path)), n)

    def first(self, b: int) -> "Bank":
        """The first ``b`` rows (nested budgets, comparison-study spec §2.1).

        Parameters
        ----------
        b : int
            Budget; at most ``self.n``. Invalid simulations count against it.

        Returns
        -------
        Bank
        """
        b = int(b)
        if not 0 <= b <= self.n:
            raise ValueError(f"budget {b} exceeds the {self.n} rows of this bank; run run_campaign(problem, {b}, ...) to extend it")
        return Bank(self._store, b)

    # ------------------------------------------------------------ identity
    @property
    def path(self) -> Path:
        return self._store.path

    @property
    def key(self) -> str:
        return self._store.meta["key"]

    @property
    def content(self) -> dict[str, Any]:
        """What the key hashes (entry, config, priors, settings, seed, stream, ...)."""
        return self._store.meta["content"]

    @property
    def seed(self) -> int:
        return int(self.content["seed"])

    @property
    def stream(self) -> str:
        return str(self.content["stream"])

    @property
    def entry_id(self) -> str:
        return str(self.content["entry_id"])

    @property
    def names(self) -> list[str]:
        return list(self._store.meta["names"])

    @property
    def feature_names(self) -> list[str]:
        names = list(self._store.meta["feature_names"])
        if not names and self.n:
            names = [f"x[{j}]" for j in range(self.x.shape[1])]
        return names

    # ------------------------------------------------------------ data
    def _get(self, name: str) -> np.ndarray:
        return self._store.load(self.n)[name][: self.n]

    @property
    def theta(self) -> np.ndarray:
        """Parameter sets (n, D) float64 (read-only)."""
        return self._get("theta")

    @property
    def x(self) -> np.ndarray:
        """Features (n, F) float64, NaN/inf kept as simulated (read-only)."""
        return self._get("x")

    @property
    def valid(self) -> np.ndarray:
        """(n,) bool: every feature of the row is finite."""
        return self._get("valid")

    @property
    def sim_seeds(self) -> np.ndarray:
        """(n,) uint64 simulation seeds (``seeds_for(seed, n, stream=stream)``)."""
        return self._get("sim_seed")

    @property
    def n_invalid(self) -> int:
        """Rows with a non-finite feature (counted against the budget, filtered only at training)."""
        return int(self.n - np.count_nonzero(self.valid))

    def __len__(self) -> int:
        return self.n

    # ------------------------------------------------------------ cost
    def chunks(self) -> list[dict[str, Any]]:
        """Per-chunk records covering this view: start, stop, file, wall_s, cpu_s, host, pid, n_invalid."""
        return self._store.costs(self.n)

    def _prorated(self, field: str) -> float:
        total = 0.0
        for c in self.chunks():
            used = min(c["stop"], self.n) - c["start"]
            if used > 0 and c.get(field) is not None:
                total += float(c[field]) * used / (c["stop"] - c["start"])
        return total

    @property
    def wall_time_s(self) -> float:
        """Simulation wall seconds charged to these rows: Σ over chunks of the chunk's wall time
        (measured in the worker) × the fraction of its rows in this view."""
        return self._prorated("wall_s")

    @property
    def cpu_time_s(self) -> float:
        """Process CPU seconds of the workers, apportioned like :attr:`wall_time_s`."""
        return self._prorated("cpu_s")

    # ------------------------------------------------------------ views
    def to_dataset(self):
        """The rows as an ``xarray.Dataset`` (dims ``simulation``, ``parameter``, ``feature``)."""
        import xarray as xr

        return xr.Dataset(
            {
                "theta": (("simulation", "parameter"), self.theta),
                "x": (("simulation", "feature"), self.x),
                "valid": (("simulation",), self.valid),
                "sim_seed": (("simulation",), self.sim_seeds),
            },
            coords={"simulation": np.arange(self.n), "parameter": self.names, "feature": self.feature_names},
            attrs={"bank_key": self.key, "bank_path": str(self.path), "entry_id": self.entry_id, "seed": self.seed, "stream": self.stream, "wall_time_s": self.wall_time_s},
        )

    def summary(self) -> dict[str, Any]:
        """A flat record: identity, size, invalid count and fraction, cost and throughput."""
        wall = self.wall_time_s
        chunks = self.chunks()
        return {
            "entry_id": self.entry_id,
            "entry_hash": self.content.get("entry_hash", ""),
            "key": self.key,
            "path": str(self.path),
            "seed": self.seed,
            "stream": self.stream,
            "n": self.n,
            "n_valid": self.n - self.n_invalid,
            "n_invalid": self.n_invalid,
            "invalid_fraction": self.n_invalid / self.n if self.n else 0.0,
            "n_parameters": len(self.names),
            "n_features": len(self.feature_names),
            "n_chunks": len(chunks),
            "wall_time_s": wall,
            "cpu_time_s": self.cpu_time_s,
            "simulations_per_s": self.n / wall if wall > 0 else float("nan"),
            "hosts": sorted({str(c["host"]) for c in chunks if c.get("host") is not None}),
            "theta_block": int(self._store.meta.get("theta_block", THETA_BLOCK)),
            "torch_version": self._store.meta.get("torch_version"),
        }

    def __repr__(self) -> str:
        return f"Bank({self.entry_id!r}, n={self.n}, n_invalid={self.n_invalid}, key={self.key[:16]}, path={str(self.path)!r})"


def _ensure_store(path: Path, key: str, content: dict[str, Any], problem: Problem) -> _Store:
    """Create the bank directory and ``bank.json`` if needed; check the identity otherwise."""
    meta_path = path / "bank.json"
    (path / "chunks").mkdir(parents=True, exist_ok=True)
    if meta_path.exists():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("key") != key:
            raise BankError(f"{path} holds a different bank (key {meta.get('key')}, expected {key}); remove it or use another cache directory")
    else:
        import torch

        feature_names: list[str] = []
        try:
            feature_names = list(problem.feature_names())
        except Exception:  # pragma: no cover - features named from x later
            feature_names = []
        from importlib.metadata import PackageNotFoundError, version

        try:
            mz = version("mechzoo")
        except PackageNotFoundError:  # pragma: no cover
            mz = "unknown"
        meta = {
            "format": "mechzoo-simulation-bank",
            "format_version": FORMAT_VERSION,
            "key": key,
            "content": content,
            "names": problem.flat_names(),
            "feature_names": feature_names,
            "theta_block": THETA_BLOCK,
            "torch_version": torch.__version__,
            "numpy_version": np.__version__,
            "mechzoo_version": mz,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        _atomic_write_text(meta_path, json.dumps(meta, indent=1, sort_keys=True))
    return _Store(path)


def open_bank(
    problem: Problem,
    *,
    seed: int,
    stream: str = "simulate",
    settings: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike | None = None,
    n: int | None = None,
) -> Bank:
    """Open the existing bank of (problem, seed, stream, settings) without simulating.

    Parameters
    ----------
    problem : Problem
    seed : int
    stream : str
    settings : mapping, optional
    cache_dir : path-like, optional
    n : int, optional
        Rows to expose (default: all contiguous committed rows).

    Returns
    -------
    Bank

    Raises
    ------
    FileNotFoundError
        If no such bank exists.
    """
    return Bank.open(bank_dir(problem, seed=seed, stream=stream, settings=settings, cache_dir=cache_dir), n)


# ============================================================================ the campaign
def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _dask_client(executor):
    """(client, owned) for a scheduler address or a ``distributed.Client``."""
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover
        raise ImportError("a Dask executor needs `distributed` (pip install 'mechzoo[dask]')") from exc
    if isinstance(executor, distributed.Client):
        return executor, False
    return distributed.Client(executor, set_as_default=False), True


def run_campaign(
    problem: Problem,
    n: int,
    *,
    seed: int,
    stream: str = "simulate",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    executor: Any = None,
    workers: int | None = None,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
    settings: Mapping[str, Any] | None = None,
    fail_after_chunks: int | None = None,
) -> Bank:
    """Simulate ``n`` prior draws into the on-disk bank of (problem, seed, stream), resuming it.

    Rows already committed (by this or an earlier, possibly interrupted or larger, campaign) are
    reused; only missing rows are simulated. Row i's θ and simulation seed depend only on
    (seed, stream, i), so the bank does not depend on ``chunk_size``, ``workers`` or ``executor``.

    Parameters
    ----------
    problem : Problem
        The entry's inference problem (only the prior, the model and its config are used).
    n : int
        Rows wanted (the largest budget; smaller budgets are :meth:`Bank.first`).
    seed : int
        Root seed.
    stream : str, default "simulate"
        Seed stream; held-out sets use another stream (e.g. ``"calib"``) and so another bank.
    chunk_size : int, default 1024
        Rows per chunk (unit of work, of commit and of resume). Multiples of
        :data:`THETA_BLOCK` avoid drawing θ blocks twice.
    executor : None, "local", str or distributed.Client
        ``None``/``"local"``: local process pool (spawn); a scheduler address (e.g.
        ``"tcp://host:8786"``) or a ``distributed.Client``: Dask.
    workers : int, optional
        Local processes (default: CPUs available); 1 runs in-process. Ignored for Dask.
    progress : bool, default True
        Show a tqdm bar (simulations, simulations/s).
    cache_dir : path-like, optional
        Cache root (default ``MECHZOO_CACHE`` or the user cache dir); the bank goes to
        ``<cache_dir>/banks/<entry>-<key[:16]>/``.
    settings : mapping, optional
        Extra simulator settings that enter the key (see :func:`bank_key`).
    fail_after_chunks : int, optional
        Test hook: raise :class:`InjectedFailure` after this many chunks were committed in this
        call (simulates a crash of the driver).

    Returns
    -------
    Bank
        The first ``n`` rows.

    Raises
    ------
    SimulationError
        If the simulator raised on a chunk (message names the row range). Chunks finished
        before or alongside it are committed first, so a rerun resumes after them.
    InjectedFailure
        From ``fail_after_chunks``.
    """
    n, chunk_size = int(n), int(chunk_size)
    if n < 0:
        raise ValueError(f"n must be >= 0 (got {n})")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 (got {chunk_size})")
    if workers is not None and int(workers) < 1:
        raise ValueError(f"workers must be >= 1 (got {workers})")
    if isinstance(executor, str) and executor != "local" and ":" not in executor:
        raise ValueError(
            f"unknown executor {executor!r}: use None or 'local' (process pool), a Dask scheduler address "
            "such as 'tcp://host:8786', or a distributed.Client"
        )
    if fail_after_chunks is not None and int(fail_after_chunks) < 0:
        raise ValueError(f"fail_after_chunks must be >= 0 (got {fail_after_chunks})")
    if not (hasattr(problem.model, "simulate") or hasattr(problem.model, "simulate_features")):
        raise ValueError(f"entry {problem.entry_id!r} has no simulator; simulation campaigns need one")

    key, content = bank_key(problem, seed=seed, stream=stream, settings=settings)
    path = _cache_root(cache_dir) / "banks" / f"{problem.entry_id}-{key[:16]}"
    store = _ensure_store(path, key, content, problem)
    _clean_stale_tmp(store.chunks_dir)
    todo = _missing(_scan_chunks(store.chunks_dir), n, chunk_size)
    if todo:
        _run(problem, key, store, todo, n, int(seed), str(stream), executor, workers, progress, fail_after_chunks)
        store.refresh()
    if store.n_rows < n:  # pragma: no cover - would be a bug in _missing/_cover
        raise BankError(f"after the campaign the bank at {path} holds only {store.n_rows} contiguous rows of {n}")
    return Bank(store, n)


def _run(problem, key, store, todo, n, seed, stream, executor, workers, progress, fail_after_chunks) -> None:
    from tqdm.auto import tqdm

    n_todo = sum(b - a for a, b in todo)
    local = executor is None or (isinstance(executor, str) and executor == "local")
    patched = sorted({"simulate", "simulate_features", "features_of"} & set(vars(problem)))
    if patched and not local:
        raise ValueError(
            f"the problem's {patched} are overridden on the instance; Dask workers rebuild the problem from its module "
            "and would not see that: put the change in the model module, or run locally with workers=1"
        )
    if patched and workers != 1:
        warnings.warn(f"the problem's {patched} are overridden on the instance; running the campaign in-process", stacklevel=3)
        workers = 1
    spec = _ProblemSpec.of(problem, key) if (workers != 1 or not local) else None
    prior = problem.torch_prior()  # θ is drawn here, in the driver: workers need no torch

    def draw(a: int, b: int) -> np.ndarray:
        return theta_rows(prior, seed, stream, a, b)

    committed = 0
    bar = tqdm(total=n, initial=n - n_todo, desc=f"simulate {problem.entry_id}", unit="sim", unit_scale=True, disable=not progress, smoothing=0.1)

    def commit(result: Mapping[str, Any], remote: bool) -> None:
        nonlocal committed
        _write_chunk(store.chunks_dir, key, result)
        rows = int(result["stop"]) - int(result["start"])
        if remote:
            problem.counter.simulations += rows
        committed += 1
        bar.update(rows)
        if fail_after_chunks is not None and committed >= int(fail_after_chunks):
            raise InjectedFailure(f"injected failure after {committed} committed chunk(s) (fail_after_chunks={fail_after_chunks})")

    try:
        if fail_after_chunks is not None and int(fail_after_chunks) == 0:
            raise InjectedFailure("injected failure before the first chunk (fail_after_chunks=0)")
        if local:
            w = min(int(workers) if workers is not None else _default_workers(), len(todo))
            if w <= 1:
                for a, b in todo:
                    commit(_compute_chunk(problem, draw(a, b), seed, stream, a, b), remote=False)
                return
            import multiprocessing as mp

            pool = cf.ProcessPoolExecutor(max_workers=w, mp_context=mp.get_context("spawn"), initializer=_init_pool_worker, initargs=(1,))
            try:
                _drive(
                    lambda a, b: pool.submit(_remote_chunk, spec, draw(a, b), seed, stream, a, b),
                    lambda fs: cf.wait(fs, return_when=cf.FIRST_COMPLETED),
                    lambda fs: [f.cancel() for f in fs],
                    todo,
                    2 * w,
                    commit,
                )
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        else:
            import distributed

            client, owned = _dask_client(executor)
            try:
                window = max(2, 2 * sum(client.nthreads().values()))
                with client.as_current():  # distributed.wait looks the client up
                    _drive(
                        lambda a, b: client.submit(_remote_chunk, spec, draw(a, b), seed, stream, a, b, key=f"mechzoo-bank-{key[:16]}-{a}-{b}", pure=False),
                        lambda fs: distributed.wait(fs, return_when="FIRST_COMPLETED"),
                        lambda fs: client.cancel(list(fs)),
                        todo,
                        window,
                        commit,
                    )
            finally:
                if owned:
                    client.close()
    finally:
        bar.close()


def _drive(submit: Callable, wait: Callable, cancel: Callable, todo, window: int, commit: Callable) -> None:
    """Keep ``window`` chunks in flight; commit each as it completes (in any order).

    A simulator error stops new submissions; chunks already in flight are awaited and committed,
    then the first error is raised. Any other exception (e.g. :class:`InjectedFailure`) cancels
    what is in flight and propagates at once.
    """
    pending = deque(todo)
    inflight: dict[Any, tuple[int, int]] = {}
    failed: list[Any] = []
    error: BaseException | None = None
    try:
        while pending or inflight:
            while error is None and pending and len(inflight) < window:
                a, b = pending.popleft()
                inflight[submit(a, b)] = (a, b)
            if not inflight:
                break
            done, _ = wait(list(inflight))
            for fut in sorted(done, key=lambda f: inflight[f]):
                a, b = inflight.pop(fut)
                try:
                    result = fut.result()
                except SimulationError as exc:
                    failed.append(fut)
                    error = error or exc
                    continue
                except Exception as exc:  # worker died, unpicklable result, ...
                    failed.append(fut)
                    if error is None:
                        error = SimulationError(f"chunk rows [{a}, {b}) failed in the executor: {type(exc).__name__}: {exc}", a, b)
                        error.__cause__ = exc
                    continue
                commit(result, remote=True)
        if error is not None:
            raise error
    except BaseException:
        # release what is in flight and the erred tasks (Dask would otherwise keep an erred
        # task under its content key and hand the error back to the next campaign)
        if inflight or failed:
            cancel(list(inflight) + failed)
        raise
