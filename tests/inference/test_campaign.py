"""Simulation campaigns and the on-disk bank: seeds, chunking, resume, crash safety, executors."""

import dataclasses
import hashlib
import json
import os
import time

import importlib

import numpy as np
import pytest
import xarray as xr

import mechzoo
from mechzoo.inference.campaign import (
    THETA_BLOCK,
    Bank,
    InjectedFailure,
    SimulationError,
    _theta_block_seed,
    bank_dir,
    bank_key,
    open_bank,
    run_campaign,
    theta_rows,
)
from mechzoo.inference.problem import seeds_for

SEED = 123


@pytest.fixture(scope="module")
def problem():
    return mechzoo.problem("linear-gaussian")


@pytest.fixture(scope="module")
def direct(problem):
    """Rows 0..2999 computed without the store: θ by blocks, seeds by ``seeds_for``."""
    n = 3000
    theta = theta_rows(problem.torch_prior(), SEED, "simulate", 0, n)
    x = problem.simulate_features(theta, seeds_for(SEED, n, stream="simulate"))
    return theta, x


@pytest.fixture(scope="module")
def reference(problem, tmp_path_factory):
    """An uninterrupted in-process bank of 2000 rows (chunks of 512)."""
    return run_campaign(problem, 2000, seed=SEED, chunk_size=512, workers=1, progress=False, cache_dir=tmp_path_factory.mktemp("ref"))


def _chunk_files(bank_path):
    return sorted(p for p in (bank_path / "chunks").iterdir() if not p.name.startswith("."))


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_same(a, b):
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.valid, b.valid)
    np.testing.assert_array_equal(a.sim_seeds, b.sim_seeds)


# ---------------------------------------------------------------- content and layout
def test_bank_equals_direct_computation(problem, direct, reference, tmp_path):
    theta, x = direct
    bank = reference
    assert bank.n == len(bank) == 2000
    np.testing.assert_array_equal(bank.theta, theta[:2000])
    np.testing.assert_array_equal(bank.x, x[:2000])
    np.testing.assert_array_equal(bank.sim_seeds, seeds_for(SEED, 2000, stream="simulate"))
    assert bank.theta.dtype == np.float64 and bank.x.dtype == np.float64
    assert bank.valid.all() and bank.n_invalid == 0
    assert bank.names == problem.flat_names() == ["intercept", "slopes[x1]", "slopes[x2]"]
    assert bank.feature_names == problem.feature_names()
    # θ row i is row i % THETA_BLOCK of block i // THETA_BLOCK drawn whole from the torch prior
    prior = problem.torch_prior()
    block3 = prior.sample_seeded(THETA_BLOCK, _theta_block_seed(SEED, "simulate", 3)).numpy()
    np.testing.assert_array_equal(bank.theta[3 * THETA_BLOCK : 4 * THETA_BLOCK], block3)
    # prior draws look like the prior (intercept ~ N(0, 2), slopes ~ N([0, .5], [1, 1.5]))
    np.testing.assert_allclose(bank.theta.mean(0), [0.0, 0.0, 0.5], atol=0.15)
    np.testing.assert_allclose(bank.theta.std(0), [2.0, 1.0, 1.5], rtol=0.08)
    # layout: <cache>/banks/<entry>-<key[:16]>/{bank.json, chunks/*.nc}; the key is the content hash
    key, content = bank_key(problem, seed=SEED, stream="simulate")
    assert bank.key == key and len(key) == 64
    assert bank.path.name == f"linear-gaussian-{key[:16]}" and bank.path.parent.name == "banks"
    meta = json.loads((bank.path / "bank.json").read_text())
    assert meta["key"] == key and meta["content"] == content and meta["theta_block"] == THETA_BLOCK
    assert content["entry_hash"] == problem.entry_hash and content["config"] == problem.config
    assert [p.name for p in _chunk_files(bank.path)] == [
        "000000000000-000000000512.nc",
        "000000000512-000000001024.nc",
        "000000001024-000000001536.nc",
        "000000001536-000000002000.nc",
    ]
    # cost, summary, reopening
    assert bank.wall_time_s > 0 and len(bank.chunks()) == 4
    s = bank.summary()
    assert s["n"] == 2000 and s["n_invalid"] == 0 and s["n_chunks"] == 4 and s["simulations_per_s"] > 0
    again = Bank.open(bank.path)
    _assert_same(again, bank)
    ds = bank.to_dataset()
    assert ds["theta"].dims == ("simulation", "parameter") and list(ds["feature"].values) == bank.feature_names


def test_key_depends_on_content(problem):
    k = bank_key(problem, seed=SEED)[0]
    assert bank_key(problem, seed=SEED)[0] == k
    assert bank_key(problem, seed=SEED + 1)[0] != k
    assert bank_key(problem, seed=SEED, stream="calib")[0] != k
    assert bank_key(problem, seed=SEED, settings={"features": "v2"})[0] != k
    other = dataclasses.replace(problem, config={**problem.config, "noise_sd": 0.25})
    assert bank_key(other, seed=SEED)[0] != k


def test_bad_arguments(problem, tmp_path):
    for kwargs, match in (
        ({"executor": "threads"}, "unknown executor"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"workers": 0}, "workers"),
    ):
        with pytest.raises(ValueError, match=match):
            run_campaign(problem, 10, seed=SEED, progress=False, cache_dir=tmp_path, **kwargs)
    with pytest.raises(FileNotFoundError, match="run_campaign"):
        open_bank(problem, seed=SEED + 99, cache_dir=tmp_path)


def test_nested_budgets(reference):
    b = reference.first(700)
    assert b.n == 700
    np.testing.assert_array_equal(b.theta, reference.theta[:700])
    np.testing.assert_array_equal(b.x, reference.x[:700])
    # cost is charged pro rata: the first 700 rows use chunk 0 whole and 188/512 of chunk 1
    c = reference.chunks()
    assert b.wall_time_s == pytest.approx(c[0]["wall_s"] + c[1]["wall_s"] * 188 / 512)
    assert reference.first(2000).n == 2000
    with pytest.raises(ValueError, match="exceeds"):
        reference.first(2001)


def test_chunk_size_independence(problem, reference, tmp_path):
    for i, cs in enumerate((300, 1024)):
        bank = run_campaign(problem, 2000, seed=SEED, chunk_size=cs, workers=1, progress=False, cache_dir=tmp_path / str(i))
        _assert_same(bank, reference)
    # a smaller bank is a prefix of a larger one; extending reuses the rows already there
    d = tmp_path / "grow"
    small = run_campaign(problem, 600, seed=SEED, chunk_size=256, workers=1, progress=False, cache_dir=d)
    _assert_same(small, reference.first(600))
    before = {p.name: _sha(p) for p in _chunk_files(small.path)}
    big = run_campaign(problem, 2000, seed=SEED, chunk_size=512, workers=1, progress=False, cache_dir=d)
    _assert_same(big, reference)
    assert {p.name: _sha(p) for p in _chunk_files(big.path) if p.name in before} == before


# ---------------------------------------------------------------- resume and crash safety
def test_resume_after_injected_failure(problem, reference, tmp_path):
    with pytest.raises(InjectedFailure):
        run_campaign(problem, 2000, seed=SEED, chunk_size=400, workers=1, progress=False, cache_dir=tmp_path, fail_after_chunks=2)
    path = bank_dir(problem, seed=SEED, cache_dir=tmp_path)
    files = _chunk_files(path)
    assert [p.name for p in files] == ["000000000000-000000000400.nc", "000000000400-000000000800.nc"]
    stamp = {p.name: (_sha(p), p.stat().st_mtime_ns) for p in files}
    partial = open_bank(problem, seed=SEED, cache_dir=tmp_path)
    assert partial.n == 800
    _assert_same(partial, reference.first(800))  # what was written is intact
    calls = problem.counter.simulations
    bank = run_campaign(problem, 2000, seed=SEED, chunk_size=400, workers=1, progress=False, cache_dir=tmp_path)
    assert problem.counter.simulations - calls == 1200  # only the missing rows were simulated
    _assert_same(bank, reference)
    assert {p.name: (_sha(p), p.stat().st_mtime_ns) for p in files} == stamp  # never rewritten


def test_crash_while_writing_a_chunk_is_ignored(problem, reference, tmp_path):
    with pytest.raises(InjectedFailure):
        run_campaign(problem, 2000, seed=SEED, chunk_size=512, workers=1, progress=False, cache_dir=tmp_path, fail_after_chunks=1)
    chunks = bank_dir(problem, seed=SEED, cache_dir=tmp_path) / "chunks"
    good = chunks / "000000000000-000000000512.nc"
    # a writer killed mid-write leaves a truncated temporary file (never a final-named one)
    fresh = chunks / ".tmp-000000000512-000000001024-99999-deadbeef.nc"
    fresh.write_bytes(good.read_bytes()[:1000])
    stale = chunks / ".tmp-000000001024-000000001536-99998-cafecafe.nc"
    stale.write_bytes(b"\x89HDF garbage")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert open_bank(problem, seed=SEED, cache_dir=tmp_path).n == 512  # readers ignore temporary files
    bank = run_campaign(problem, 2000, seed=SEED, chunk_size=512, workers=1, progress=False, cache_dir=tmp_path)
    _assert_same(bank, reference)
    assert not stale.exists()  # stale left-overs are cleaned up
    assert fresh.exists()  # a recent one may belong to a live writer: left alone, and ignored


def test_simulator_error_names_the_chunk_and_keeps_finished_chunks(problem, reference, tmp_path):
    broken = dataclasses.replace(problem)
    calls = {"n": 0}

    def flaky(theta, seeds):
        calls["n"] += 1
        if calls["n"] == 3:
            raise FloatingPointError("solver blew up")
        return problem.simulate_features(theta, seeds)

    broken.simulate_features = flaky
    with pytest.raises(SimulationError, match=r"rows \[1000, 1500\).*FloatingPointError: solver blew up") as info:
        run_campaign(broken, 2000, seed=SEED, chunk_size=500, workers=1, progress=False, cache_dir=tmp_path)
    assert (info.value.start, info.value.stop) == (1000, 1500)
    assert open_bank(problem, seed=SEED, cache_dir=tmp_path).n == 1000
    bank = run_campaign(problem, 2000, seed=SEED, chunk_size=500, workers=1, progress=False, cache_dir=tmp_path)
    _assert_same(bank, reference)


# ---------------------------------------------------------------- invalid simulations
def test_nan_features_are_counted_and_kept(problem, direct, tmp_path):
    theta_ref, x_ref = direct
    patched = dataclasses.replace(problem)

    def with_nans(theta, seeds):
        x = problem.simulate_features(theta, seeds)
        x[theta[:, 0] > 2.0, 1] = np.nan  # intercept above 2: "silent" simulation
        x[theta[:, 0] < -3.0, 0] = np.inf
        return x

    patched.simulate_features = with_nans
    with pytest.warns(UserWarning, match="in-process"):
        bank = run_campaign(patched, 1500, seed=SEED, chunk_size=500, workers=2, progress=False, cache_dir=tmp_path)
    bad = (theta_ref[:1500, 0] > 2.0) | (theta_ref[:1500, 0] < -3.0)
    assert 100 < bad.sum() < 400
    np.testing.assert_array_equal(bank.valid, ~bad)
    assert bank.n_invalid == bad.sum() == bank.summary()["n_invalid"]
    assert bank.n == 1500  # invalid rows count against the budget; nothing is dropped
    assert np.isnan(bank.x[theta_ref[:1500, 0] > 2.0, 1]).all()
    np.testing.assert_array_equal(bank.x[~bad], x_ref[:1500][~bad])
    assert sum(c["n_invalid"] for c in bank.chunks()) == bad.sum()
    assert bank.first(500).n_invalid == bad[:500].sum()


# ---------------------------------------------------------------- executors
def test_process_pool_equals_in_process(problem, reference, tmp_path):
    calls = problem.counter.simulations
    bank = run_campaign(problem, 2000, seed=SEED, chunk_size=300, workers=2, progress=False, cache_dir=tmp_path)
    _assert_same(bank, reference)
    assert problem.counter.simulations - calls == 2000
    assert os.getpid() not in {c["pid"] for c in bank.chunks()}  # simulated in the worker processes


def test_dask_cluster_equals_local(problem, reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            bank = run_campaign(problem, 2000, seed=SEED, chunk_size=512, executor=client, progress=False, cache_dir=tmp_path / "client")
            _assert_same(bank, reference)
            assert os.getpid() not in {c["pid"] for c in bank.chunks()}
        # a scheduler address works too (the campaign opens and closes its own client)
        bank = run_campaign(problem, 2000, seed=SEED, chunk_size=700, executor=cluster.scheduler_address, progress=False, cache_dir=tmp_path / "address")
        _assert_same(bank, reference)


FAKE_MODEL = '''
"""A tiny fake model for the campaign tests: NaN features for large intercepts, a crash above a threshold."""
import numpy as np


def simulate_features(params, *, config, seeds):
    icpt = np.asarray(params["intercept"], dtype=np.float64)
    if np.any(icpt > config["fail_above"]):
        raise FloatingPointError("fake solver diverged")
    noise = (np.asarray(seeds, dtype=np.uint64) % np.uint64(1000)).astype(np.float64) / 1000.0
    x = np.column_stack([icpt + noise, np.asarray(params["slopes"]).reshape(icpt.size, -1)])
    x[icpt > config["nan_above"], 0] = np.nan
    return x


def feature_names(config):
    return ["a", "b", "c"]
'''


def test_process_pool_reports_failures_and_counts_nans(problem, direct, tmp_path, monkeypatch):
    """Across the process boundary: NaN rows are kept and counted; a crash names its chunk."""
    (tmp_path / "mz_fake_model.py").write_text(FAKE_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers inherit sys.path
    theta = direct[0][:2000]
    worst = int(np.argmax(theta[:, 0]))
    config = {"nan_above": 2.0, "fail_above": float(theta[worst, 0]) - 1e-9}  # exactly one row crashes
    fake = dataclasses.replace(problem, model=importlib.import_module("mz_fake_model"), config=config)
    with pytest.raises(SimulationError, match="FloatingPointError: fake solver diverged") as info:
        run_campaign(fake, 2000, seed=SEED, chunk_size=250, workers=2, progress=False, cache_dir=tmp_path / "c")
    bad_chunk = (worst // 250 * 250, worst // 250 * 250 + 250)
    assert (info.value.start, info.value.stop) == bad_chunk
    assert f"rows [{bad_chunk[0]}, {bad_chunk[1]})" in str(info.value)
    path = bank_dir(fake, seed=SEED, cache_dir=tmp_path / "c")
    names = [p.name for p in _chunk_files(path)]
    assert f"{bad_chunk[0]:012d}-{bad_chunk[1]:012d}.nc" not in names and len(names) >= 1
    # the committed rows hold their NaNs, flagged and counted
    for p in _chunk_files(path):
        a, b = (int(v) for v in p.name[:-3].split("-"))
        with xr.open_dataset(p, engine="h5netcdf") as chunk:  # chunks are plain netCDF files
            expect_bad = theta[a:b, 0] > 2.0
            np.testing.assert_array_equal(chunk["valid"].values.astype(bool), ~expect_bad)
            np.testing.assert_array_equal(np.isnan(chunk["x"].values[:, 0]), expect_bad)
            assert chunk.attrs["n_invalid"] == expect_bad.sum() and chunk.attrs["stop"] == b
            np.testing.assert_array_equal(chunk["theta"].values, theta[a:b])
