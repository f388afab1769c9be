"""Entry schema and registry: valid entries load; malformed ones fail naming file, field and problem."""

import tomllib
from pathlib import Path

import pytest

import mechzoo
from mechzoo.registry import ENTRY_DIR
from mechzoo.schema import EntryError, parse_entry

BASE = tomllib.loads((ENTRY_DIR / "linear-gaussian.toml").read_text())


def _with(**changes):
    raw = {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v) for k, v in BASE.items()}
    for dotted, value in changes.items():
        keys = dotted.split("__")
        target = raw
        for k in keys[:-1]:
            target = target[int(k)] if isinstance(target, list) else target[k]
        if value is _DELETE:
            del target[keys[-1]]
        elif isinstance(target, list):
            target[int(keys[-1])] = value
        else:
            target[keys[-1]] = value
    return raw


_DELETE = object()


def _param(i, **kw):
    p = dict(BASE["parameters"][i])
    p.update(kw)
    return p


MALFORMED = [
    ("missing id", _with(id=_DELETE), "field 'id'"),
    ("bad id", _with(id="Linear Gaussian"), "field 'id'"),
    ("unknown prior kind", _with(parameters=[_param(0, prior={"kind": "Gama", "shape": 1, "scale": 1}), BASE["parameters"][1]]), "did you mean Gamma"),
    ("prior missing argument", _with(parameters=[_param(0, prior={"kind": "Normal", "mu": 0}), BASE["parameters"][1]]), "parameters[0].prior"),
    ("undeclared dim", _with(parameters=[BASE["parameters"][0], _param(1, dims=["regressor"])]), "dim 'regressor' is not declared"),
    ("reference shape", _with(parameters=[BASE["parameters"][0], _param(1, reference=[1.0, 2.0, 3.0])]), "reference has shape"),
    ("reference outside support", _with(parameters=[_param(0, prior={"kind": "HalfNormal", "sigma": 1.0}, reference=-1.0), BASE["parameters"][1]]), "outside the support"),
    ("duplicate names", _with(parameters=[BASE["parameters"][0], _param(1, name="intercept", dims=[], reference=0.0, prior={"kind": "Normal", "mu": 0, "sigma": 1})]), "duplicate parameter name"),
    ("no route", _with(routes={"likelihood": False, "simulator": False}), "at least one route"),
    ("default method not a route", _with(routes={"likelihood": False, "simulator": True, "default": "nuts"}), "default method 'nuts'"),
    ("misspelt field", _with(sumary="typo"), "field 'sumary'"),
    ("no default data", _with(data={"other": {"seed": 1}}), "'default' is required"),
    ("prior shape mismatch", _with(parameters=[BASE["parameters"][0], _param(1, prior={"kind": "Normal", "mu": [0, 0, 0], "sigma": 1})]), "cannot be broadcast"),
    ("fixed shadows a parameter", _with(fixed={"intercept": {"value": 1.0}}), "also a free parameter"),
    ("bad date", _with(added="yesterday"), "field 'added'"),
]


@pytest.mark.parametrize("label, raw, fragment", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_entries_fail_clearly(label, raw, fragment):
    with pytest.raises(EntryError) as info:
        parse_entry(raw, "zoo/entries/linear-gaussian.toml")
    message = str(info.value)
    assert "zoo/entries/linear-gaussian.toml" in message
    assert fragment in message


def test_file_name_must_match_id(tmp_path):
    path = tmp_path / "other-name.toml"
    with pytest.raises(EntryError, match="differs from the file name"):
        parse_entry(BASE, path)


def test_registry_lists_and_loads():
    ids = mechzoo.entries()
    assert "linear-gaussian" in ids
    entry = mechzoo.load("linear-gaussian")
    assert isinstance(entry, mechzoo.Entry)
    assert [p.name for p in entry.parameters] == ["intercept", "slopes"]
    assert entry.parameter_specs()[1].shape == (2,)
    assert entry.parameter_specs()[1].flat_names() == ["slopes[x1]", "slopes[x2]"]


def test_unknown_id_suggests_closest():
    with pytest.raises(mechzoo.UnknownEntryError, match="did you mean 'linear-gaussian'"):
        mechzoo.load("linear-gausian")


def test_extra_entry_folder_and_invalid_toml(tmp_path, monkeypatch):
    (tmp_path / "broken-entry.toml").write_text("id = 'broken-entry\n")
    monkeypatch.setenv("MECHZOO_ENTRY_PATH", str(tmp_path))
    assert "broken-entry" in mechzoo.entries()
    with pytest.raises(EntryError, match="not valid TOML"):
        mechzoo.load("broken-entry")


def test_missing_model_function_is_reported(tmp_path, monkeypatch):
    text = (ENTRY_DIR / "linear-gaussian.toml").read_text().replace('id = "linear-gaussian"', 'id = "no-such-module"').replace(
        'module = "linear_gaussian"', 'module = "does_not_exist"'
    )
    (tmp_path / "no-such-module.toml").write_text(text)
    monkeypatch.setenv("MECHZOO_ENTRY_PATH", str(tmp_path))
    with pytest.raises(EntryError, match="field 'model.module'"):
        mechzoo.load("no-such-module")
