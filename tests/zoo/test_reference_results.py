"""Shipped reference results: lookup by entry and method, clear errors otherwise."""

import numpy as np
import pytest
import xarray as xr

import mechzoo
from mechzoo import registry


def test_reference_result_round_trip_and_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "REFERENCE_DIR", tmp_path)
    assert mechzoo.reference_results("linear-gaussian") == {}
    with pytest.raises(LookupError, match="0 reference results"):
        mechzoo.reference_result("linear-gaussian")
    tree = xr.DataTree.from_dict({"posterior": xr.Dataset({"mu": (("chain", "draw"), np.arange(6.0).reshape(2, 3))})})
    tree.attrs["method"] = "nuts"
    mechzoo.save_result(tree, tmp_path / "linear-gaussian-reference-nuts.nc")
    assert list(mechzoo.reference_results("linear-gaussian")) == ["nuts"]
    back = mechzoo.reference_result("linear-gaussian")
    np.testing.assert_array_equal(back["posterior"]["mu"].values, np.arange(6.0).reshape(2, 3))
    assert back.attrs["method"] == "nuts"
    with pytest.raises(LookupError, match="no reference result for method 'npe'.*shipped: nuts"):
        mechzoo.reference_result("linear-gaussian", "npe")
    with pytest.raises(mechzoo.UnknownEntryError, match="did you mean"):
        mechzoo.reference_results("linear-gausian")
