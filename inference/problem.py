"""The inference problem: what every route receives (DESIGN.md §4).

A :class:`Problem` bundles, for one entry and one data set, the free parameters with their
priors, the model's functions (simulator, features, likelihood) and the observed data. Routes
consume a ``Problem`` and never name a particular model; the zoo builds it from an entry.

The model module contract (``mechzoo.models.<module>``; DESIGN.md §3):

* ``simulate(params, *, config, seeds) -> dict[str, ndarray]`` — batched: every ``params[name]``
  has a leading batch axis B; ``seeds`` holds one uint64 seed per simulation so that results do
  not depend on chunking;
* ``observation_dims(config) -> dict[str, tuple[str, ...]]`` and ``coords(config) -> dict``;
* optional ``features(observations, *, config) -> (B, F)`` with ``feature_names(config)``, or a
  fused ``simulate_features(params, *, config, seeds) -> (B, F)``;
* optional ``loglik(params, data, *, config) -> pytensor scalar`` (params are PyTensor variables);
* optional ``constant_data(config) -> dict[name, (dims, array)]`` (stimuli, designs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Mapping

import numpy as np

from .priors import ParameterSpec, joint_torch_prior

__all__ = ["Problem", "seeds_for", "CallCounter"]


def seeds_for(seed: int, n: int, *, stream: str = "simulate", offset: int = 0) -> np.ndarray:
    """``n`` independent uint64 simulation seeds derived from ``seed`` and a named ``stream``.

    Seed i depends only on (seed, stream, offset + i), so a campaign chunked in any way (or run
    on Dask) gets the same seeds (DESIGN.md §6, comparison-study spec §7.3). The stream name is
    hashed whole (SHA-256) into a NumPy ``SeedSequence`` spawn key giving a base state; row i's
    seed is the SplitMix64 finaliser of ``base + (offset + i) * 0x9E3779B97F4A7C15`` (a bijective
    64-bit mix, Steele et al. 2014), computed vectorised.
    """
    import hashlib

    if n < 0 or offset < 0:
        raise ValueError(f"n and offset must be >= 0 (got {n}, {offset})")
    digest = hashlib.sha256(stream.encode()).digest()
    words = tuple(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))
    base = np.random.SeedSequence(entropy=int(seed), spawn_key=words).generate_state(1, dtype=np.uint64)[0]
    with np.errstate(over="ignore"):
        z = base + (np.arange(offset, offset + n, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z.astype(np.uint64)


@dataclass
class CallCounter:
    """Counts likelihood and simulator calls for the result attrs."""

    simulations: int = 0
    loglik_evaluations: int = 0
    gradient_evaluations: int = 0


@dataclass
class Problem:
    """One entry, one data set: everything a route needs.

    Attributes
    ----------
    entry_id : str
    parameters : list of ParameterSpec
        Free parameters in declaration order; the flat vector is their C-order concatenation.
    model : module
        The implementing module (contract above).
    config : dict
        The model configuration (entry defaults updated by the data recipe / user).
    observed : dict
        Observation arrays without batch axis (e.g. ``{"y": (n,)}``); may instead or also hold
        ``"features"`` (F,) when only a feature vector is known (e.g. a published observation).
    data_name : str
        Name of the data set (``"default"``, an observation id, or ``"user"``).
    data_info : dict
        How the data were obtained (recipe, seed, theta) — recorded in the result.
    pinned : dict
        Parameters of the entry held fixed (``{name: array of the parameter's shape}``), e.g. at
        their reference values when only a subset is fitted (``mechzoo.fit(..., free=[...])``).
        They are passed to the simulator and the likelihood with the free ones, never inferred.
    """

    entry_id: str
    parameters: list[ParameterSpec]
    model: ModuleType
    config: dict[str, Any]
    observed: dict[str, np.ndarray]
    data_name: str = "user"
    data_info: dict[str, Any] = field(default_factory=dict)
    entry_hash: str = ""
    counter: CallCounter = field(default_factory=CallCounter)
    pinned: dict[str, np.ndarray] = field(default_factory=dict)

    # ------------------------------------------------------------ flat vectors
    @property
    def dim(self) -> int:
        return int(sum(p.size for p in self.parameters))

    def flat_names(self) -> list[str]:
        return [n for p in self.parameters for n in p.flat_names()]

    def coords(self) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for p in self.parameters:
            out.update({d: list(v) for d, v in p.coords.items()})
        return out

    def unflatten(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """(..., D) flat vectors to ``{name: (..., *shape)}``."""
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape[-1] != self.dim:
            raise ValueError(f"flat parameter vectors must have length {self.dim} (got {theta.shape[-1]})")
        out, start = {}, 0
        for p in self.parameters:
            out[p.name] = theta[..., start : start + p.size].reshape(theta.shape[:-1] + tuple(p.shape))
            start += p.size
        return out

    def flatten(self, params: Mapping[str, np.ndarray], batch_ndim: int = 1) -> np.ndarray:
        """``{name: (*batch, *shape)}`` to (*batch, D)."""
        parts = []
        for p in self.parameters:
            a = np.asarray(params[p.name], dtype=np.float64)
            batch = a.shape[: a.ndim - len(p.shape)] if p.shape else a.shape
            parts.append(a.reshape(*batch, p.size))
        return np.concatenate(parts, axis=-1)

    # ------------------------------------------------------------ priors
    def torch_prior(self):
        """The joint prior over flat vectors as a torch distribution (for sbi)."""
        return joint_torch_prior(self.parameters)

    def sample_prior(self, n: int, seed: int) -> np.ndarray:
        """``n`` flat prior draws (n, D), determined by ``seed``."""
        return self.torch_prior().sample_seeded(n, seed).numpy()

    def prior_logp(self, theta: np.ndarray) -> np.ndarray:
        import torch

        return self.torch_prior().log_prob(torch.as_tensor(theta)).numpy()

    # ------------------------------------------------------------ simulator
    @property
    def has_simulator(self) -> bool:
        return hasattr(self.model, "simulate")

    @property
    def has_likelihood(self) -> bool:
        return hasattr(self.model, "loglik")

    def simulate(self, theta: np.ndarray, seeds: np.ndarray) -> dict[str, np.ndarray]:
        """Run the batched simulator on flat vectors ``theta`` (B, D)."""
        theta = np.atleast_2d(theta)
        self.counter.simulations += theta.shape[0]
        params = self.unflatten(theta)
        for name, value in self.pinned.items():
            value = np.asarray(value, dtype=np.float64)
            params[name] = np.broadcast_to(value, (theta.shape[0], *value.shape)).copy()
        return self.model.simulate(params, config=self.config, seeds=np.asarray(seeds, np.uint64))

    def feature_names(self) -> list[str]:
        if hasattr(self.model, "feature_names"):
            return list(self.model.feature_names(self.config))
        return [f"{k}[{i}]" for k, v in self.observed.items() for i in range(np.size(v))]

    def features_of(self, observations: Mapping[str, np.ndarray]) -> np.ndarray:
        """Summary features (B, F); without a ``features`` function, the flattened raw observations."""
        if "features" in observations and len(observations) == 1:
            return np.atleast_2d(np.asarray(observations["features"], dtype=np.float64))
        if hasattr(self.model, "features"):
            return np.asarray(self.model.features(observations, config=self.config), dtype=np.float64)
        parts = [np.asarray(observations[k], dtype=np.float64) for k in sorted(observations)]
        b = parts[0].shape[0]
        return np.concatenate([p.reshape(b, -1) for p in parts], axis=1)

    def simulate_features(self, theta: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        """Features of simulations at ``theta`` (B, F), using a fused model function if it exists."""
        theta = np.atleast_2d(theta)
        if hasattr(self.model, "simulate_features"):
            self.counter.simulations += theta.shape[0]
            return np.asarray(
                self.model.simulate_features(self.unflatten(theta), config=self.config, seeds=np.asarray(seeds, np.uint64)),
                dtype=np.float64,
            )
        return self.features_of(self.simulate(theta, seeds))

    def observed_features(self) -> np.ndarray:
        """The observation's features (F,)."""
        if "features" in self.observed:
            return np.asarray(self.observed["features"], dtype=np.float64).reshape(-1)
        batched = {k: np.asarray(v)[None] for k, v in self.observed.items()}
        return self.features_of(batched)[0]

    # ------------------------------------------------------------ likelihood
    def pymc_model(self):
        """A PyMC model: the entry's priors plus the model's log-likelihood as a potential."""
        import pymc as pm

        if not self.has_likelihood:
            raise ValueError(f"entry {self.entry_id!r} has no likelihood; use a simulation route (npe)")
        raw = {k: v for k, v in self.observed.items() if k != "features"}
        if not raw:
            raise ValueError(
                f"the likelihood of {self.entry_id!r} needs raw observations ({list(self.model.observation_dims(self.config))}), "
                "but the data hold only a feature vector"
            )
        import pytensor.tensor as pt

        with pm.Model(coords=self.coords()) as model:
            rvs = {p.name: p.prior.pymc(p.name, p.shape, p.dims or None) for p in self.parameters}
            for name, value in self.pinned.items():
                rvs[name] = pt.as_tensor_variable(np.asarray(value, dtype=np.float64))
            pm.Potential("loglik", self.model.loglik(rvs, raw, config=self.config))
        return model

    # ------------------------------------------------------------ data sets
    def observed_dataset(self):
        """The observation as an ``xarray.Dataset`` with named dims (``observed_data`` group)."""
        import xarray as xr

        dims = self.model.observation_dims(self.config) if hasattr(self.model, "observation_dims") else {}
        coords = self.model.coords(self.config) if hasattr(self.model, "coords") else {}
        data_vars = {}
        for k, v in self.observed.items():
            v = np.asarray(v)
            if k == "features":
                data_vars[k] = (("feature",), v.reshape(-1))
                coords = {**coords, "feature": self.feature_names()}
            else:
                data_vars[k] = (dims.get(k, tuple(f"{k}_dim_{i}" for i in range(v.ndim))), v)
        used = {d for dv in data_vars.values() for d in dv[0]}
        return xr.Dataset(data_vars, coords={k: v for k, v in coords.items() if k in used})

    def constant_dataset(self):
        """Fixed inputs (stimulus, design) as an ``xarray.Dataset``, or None."""
        import xarray as xr

        if not hasattr(self.model, "constant_data"):
            return None
        return xr.Dataset({k: (d, np.asarray(a)) for k, (d, a) in self.model.constant_data(self.config).items()})
