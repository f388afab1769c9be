"""The command line: list, show, simulate, fit, bench; one-line errors without tracebacks."""

import json
import subprocess
import sys

import pytest

from mechzoo.cli import main


def test_list_and_show(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "linear-gaussian" in out and "nuts" in out
    assert main(["show", "linear-gaussian"]) == 0
    out = capsys.readouterr().out
    assert "Normal(mu=0.0, sigma=2.0)" in out and "slopes" in out


def test_typo_suggests_entry(capsys):
    assert main(["show", "linear-gausian"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mechzoo: error: unknown entry 'linear-gausian'; did you mean 'linear-gaussian'")
    assert "Traceback" not in err and err.count("\n") == 1


def test_unknown_method_and_setting(capsys):
    assert main(["fit", "linear-gaussian", "--method", "magic", "--quiet"]) == 2
    assert "unknown method 'magic'" in capsys.readouterr().err
    assert main(["fit", "linear-gaussian", "--method", "map", "--set", "restartz=2", "--quiet"]) == 2
    assert "restartz" in capsys.readouterr().err
    assert main(["fit", "linear-gaussian", "--method", "map", "--data", "missing.nc", "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_simulate_and_fit_map(tmp_path, capsys):
    out = tmp_path / "sims.nc"
    assert main(["simulate", "linear-gaussian", "--n", "3", "--seed", "2", "--out", str(out)]) == 0
    assert out.exists()
    res = tmp_path / "map.nc"
    assert main(["fit", "linear-gaussian", "--method", "map", "--set", "restarts=2", "--quiet", "--out", str(res)]) == 0
    text = capsys.readouterr().out
    assert "linear-gaussian · map" in text and "slopes[x2]" in text and "n_converged=2" in text
    import mechzoo

    assert mechzoo.load_result(res).attrs["route"] == "map"
    # refit from the saved result's observed data
    assert main(["fit", "linear-gaussian", "--method", "map", "--set", "restarts=1", "--quiet", "--data", str(res)]) == 0


def test_bench_unknown(capsys):
    assert main(["bench", "nope"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "mechzoo.cli", "list"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "linear-gaussian" in proc.stdout


def test_bench_quick_json(capsys):
    """A benchmark runs and prints one JSON object with its baseline (quick sizes; no timing asserted)."""
    assert main(["bench", "hh", "--json", "--quick"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["benchmark"] == "hh"
    assert figures["batched_sims_per_s"] > 0 and figures["baseline_sims_per_s"] > 0
