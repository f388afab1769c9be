"""Neural posterior estimation route through ``sbi`` (DESIGN.md §4).

Single-round, amortised NPE (``sbi.inference.NPE``): θ is drawn from the entry's prior (the torch
realisation of the same declaration the likelihood routes use), simulated in batches, reduced to
the entry's summary features, and a conditional density estimator (``maf`` by default; ``nsf``
as in sbibm) is trained on the valid pairs.

Invalid simulations
-------------------
A simulation is *invalid* when any of its features is non-finite (NaN or ±inf: e.g. no spike, no
burst, a diverged integration). The setting ``invalid`` declares, per entry, how they are handled,
and the same rule is applied to the training bank and to the calibration (SBC) set
(:func:`handle_invalid`):

* ``"exclude"`` (default): invalid simulations are dropped;
* ``"replace"``: non-finite values of the features named in ``invalid_values`` (a mapping
  ``{feature name: value}`` or a list with one value per feature) are replaced by the declared
  value, as the pyloric literature does for features that do not exist for a rhythm (e.g. the
  phase of a missing burst); a simulation whose other features are still non-finite is dropped.
  The same replacement is applied to the observation.

Every count is reported, never silently: ``n_invalid_simulations`` (any non-finite raw feature),
``n_replaced_simulations`` (kept thanks to a replacement), ``n_excluded_simulations`` (dropped),
per-feature ``invalid_feature_counts`` / ``replaced_feature_counts`` in the result attributes,
the same figures for the SBC set in the ``calibration`` group's attributes, and all of them in
:func:`mechzoo.diagnose`.

Restricted prior (simulators whose prior draws are mostly invalid)
-------------------------------------------------------------------
For a simulator where only a small fraction of prior draws give a full, valid set of features
(the pyloric network: about 1 %), training on the prior wastes most simulations. The setting
``restrict`` (off by default) follows Deistler, Macke & Gonçalves (2022, PNAS 119:e2207632119),
who used ``sbi``'s ``RestrictionEstimator``:

1. *Pilot.* ``restrict["simulations"]`` prior draws are simulated into the bank of seed stream
   ``"restrict"`` (cached and resumable like every bank; it does not depend on the classifier
   settings, so it is reused when only those change).
2. *Classifier.* ``sbi.utils.RestrictionEstimator`` is trained on (θ, valid), *valid* meaning that
   every feature is finite after the entry's ``invalid`` rule (:func:`handle_invalid`), under a
   fixed torch seed derived from the route seed; ``RestrictionEstimator.restrict_prior`` turns it
   into an accepted region (its threshold is set so that at most ``allowed_false_negatives`` of
   the valid held-out pilot draws fall outside; default 0, the exact choice).
   With ``rounds = R > 1`` this is repeated: round k simulates ``simulations`` draws from the
   restricted prior of round k-1 (stream ``"restrict-k"``), the classifier is trained further on
   all pilot simulations and restricted again. The accepted region after round k is the
   *intersection* of the regions of rounds 1..k, so that successive proposals are nested and
   every pilot round, restricted to the final region, is a draw of the same distribution.
3. *Restricted prior.* p_r(θ) ∝ p(θ) 1[θ ∈ A], A the accepted region, sampled by rejection from
   the prior (``ClassifierRestrictedPrior``, a torch ``Distribution`` defined on first use so
   that importing this module does not import torch; it wraps the ``sbi`` ``RestrictedPrior``
   of every round and asks their ``log_prob`` whether θ is accepted). Its ``sample_seeded``
   makes every θ block of a bank a function of (seed, stream, block) as for the plain prior
   (the campaign draws θ in the driver, so every executor works); its fraction of accepted
   prior draws is estimated once on ``acceptance_samples`` seeded prior draws and normalises
   ``log_prob``. The main bank (``num_simulations`` rows, stream ``"restricted"``) draws θ from it.
   Its bank key holds the restriction's *fingerprint* (content hash of the restriction key, the
   classifiers' weights and the accepted region on the seeded probe draws), so banks of
   different restrictions are never mixed, and a resumed bank continues with the same restricted
   prior (it is cached in ``<cache>/npe/<entry>-restriction-<key>.pt``).
4. *NPE.* The estimator is trained on the pooled valid simulations: the main bank's, and the pilot
   rounds' that lie in the final accepted region (valid pilot draws the classifier rejects are
   dropped and counted). All pooled θ are then draws of p(θ) P(valid | θ) 1[θ ∈ A], and the NPE
   prior is the restricted prior: its support is the prior's support intersected with A, so
   ``sbi`` rejects posterior draws outside A. **The posterior is therefore the posterior
   restricted to the accepted region and conditional on the simulation producing valid
   features**, p(θ | x, valid) ∝ p(θ) 1[θ ∈ A] P(valid | θ) p(x | θ, valid), which is what Deistler
   et al. estimated; it equals the ordinary posterior only where the classifier does not cut
   into the posterior mass.
5. *Calibration.* SBC held-out θ are drawn from the same restricted prior (stream
   ``"calib-restricted"``, keyed by the same fingerprint) and only their valid simulations are
   ranked, i.e. the ranks test the estimator against the joint distribution it was trained on.
   The ``calibration`` group's attrs record ``sbc_prior = "restricted"`` and the fingerprint.

Reported (result attrs, and :func:`mechzoo.diagnose`): ``restriction_rounds``,
``n_restriction_simulations`` (all pilot rounds), ``restriction_valid_fraction`` (valid fraction
of the prior pilot: the prior's valid rate), ``restriction_round_valid_fractions``,
``restricted_prior_acceptance`` (estimated fraction of the prior accepted),
``n_bank_simulations`` and ``bank_valid_fraction`` (main bank from the restricted prior),
``n_restriction_training_simulations`` (pilot simulations pooled into training),
``n_restriction_valid_rejected`` (valid pilot simulations outside the final region, dropped),
``restriction_pilot_valid_accepted`` / ``restriction_pilot_invalid_rejected`` (classifier
sensitivity and specificity on the pilot), ``restriction_training_wall_time_s`` (classifier
training), ``restriction_simulation_wall_time_s``, ``restriction_fingerprint`` and
``restriction_path``; ``simulation_wall_time_s`` is then the main bank's. ``n_simulations`` is
the total training cost (pilot rounds + main bank), and ``n_invalid_simulations`` /
``n_excluded_simulations`` / per-feature counts cover all of them. ``train_restriction`` runs
steps 1-3 alone (e.g. to inspect the restricted prior before paying for the main bank).

The fingerprint depends on the classifier's weights bit for bit, which depend on the torch
version and thread count; the cached restriction is reused whenever it exists, so a resumed
campaign keeps its restriction, but retraining elsewhere (different threads, another cache) can
give another fingerprint and then simulates new banks instead of extending the old ones.

Truncated sequential rounds (one observation)
----------------------------------------------
The setting ``truncate`` (off by default) adds ``rounds`` rounds of truncated sequential NPE
(TSNPE; Deistler, Gonçalves & Macke 2022, NeurIPS) after the first training: each round
simulates ``simulations`` draws of the NPE prior (the prior, or the restricted prior) truncated
to the high-probability region of the current posterior at the observation, intersected with
that region's bounding box (:mod:`mechzoo.inference._truncation`: exact inverse-CDF sampling of the
box, rejection for the region), appends the valid simulations and trains on (retrains the same
network on) all of them by maximum likelihood. The estimate is correct at the observation (and
at any x whose posterior lies inside the final region), **not amortised** over the prior: the
estimator key includes the observation, SBC over the prior does not apply and is not run
(the ``calibration`` group says why), and the attrs carry ``amortised = 0``. Per round: seed
stream ``"truncate-r"``, bank keyed by the proposal's fingerprint, the posterior after the round
cached beside the estimator (so that an interrupted campaign resumes with the same proposal);
reported: ``truncation_rounds``, ``truncation_round_simulations``,
``truncation_round_valid_fractions``, ``truncation_round_acceptance`` (HPR acceptance within the
box), ``truncation_round_box_mass`` (prior mass of the box), ``truncation_round_in_support``
(fraction of the estimator's draws inside the prior's support) and
``truncation_simulation_wall_time_s`` (``training_wall_time_s`` covers the training of every
round and the construction of the proposals).

Sequential rounds with the posterior as proposal (one observation)
--------------------------------------------------------------------
The setting ``sequential`` (off by default; it excludes ``truncate``) adds ``rounds`` rounds of
APT / SNPE-C (Greenberg, Nonnenmacher & Macke 2019, ICML, "Automatic posterior
transformation"), the sequential method of the seed paper (Gonçalves et al. 2020, eLife): each
round simulates ``simulations`` draws of the current posterior q_{r-1}(θ | x_o)
(:class:`~mechzoo.inference._truncation.PosteriorProposal`: seeded, bank keyed by a fingerprint
of the estimator's weights, seed stream ``"sequential-r"``), appends the valid ones with that
proposal and retrains the same network on all rounds with ``sbi``'s atomic loss (``num_atoms``
atoms). The atomic loss corrects for the proposal, so no importance weights are needed. On a
simulator with invalid simulations, the valid rows of a round are draws of
q_{r-1}(θ) P(valid | θ), not of q_{r-1}: with the correction by q_{r-1}/p the estimator then targets
p(θ) P(valid | θ) p(x | θ, valid) = p(θ) p(x | θ) for a valid x — the ordinary posterior at a
valid observation, which is also what the first round's valid-only training targets. Like
``truncate``, the result is fitted to the observation and **not amortised**: the estimator key
includes the observation, SBC over the prior is not run (the ``calibration`` group says why) and
the attrs carry ``amortised = 0``; the round posteriors are cached beside the estimator so that
an interrupted run resumes with the same proposals. Reported: ``sequential_rounds``,
``sequential_num_atoms``, ``sequential_round_simulations``, ``sequential_round_valid_fractions``
(the validity rate of posterior draws, a check in itself), ``sequential_round_epochs`` and
``sequential_simulation_wall_time_s``. APT can overconcentrate when rounds are few and small
(Deistler et al. 2022, NeurIPS, the reason for TSNPE): check the result with the posterior
predictive check.

Bounded flows
-------------
``theta_transform = "logit"`` puts a fixed bijection from the prior box to R^D in front of the
flow (:mod:`mechzoo.inference._bounded`), so that the estimate has no mass outside the prior's
bounds; the density, the loss and the draws stay in θ.

Checks
------
The trained posterior is saved (``estimator_path`` attribute) so that new observations can be
fitted without re-simulating (:func:`load_posterior`; the cache reuses it for any observation).
Simulation-based calibration (Talts et al. 2018) on held-out simulations from a separate seed
stream is stored in the ``calibration`` group. A posterior predictive check
(:func:`posterior_predictive_features`; Gelman et al. 2013, *Bayesian Data Analysis*, ch. 6)
simulates the features at ``ppc_draws`` posterior draws and at the posterior median under
``ppc_noise_seeds`` noise seeds and stores them in the ``posterior_predictive`` group. Both are
summarised by :func:`mechzoo.diagnose`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import xarray as xr

from .cache import cache_dir
from .problem import Problem, seeds_for
from .result import make_result

__all__ = [
    "run",
    "DEFAULTS",
    "INVALID_CHOICES",
    "simulate_bank",
    "load_posterior",
    "estimator_key",
    "check_invalid_declaration",
    "invalid_replacement",
    "handle_invalid",
    "posterior_predictive_features",
    "RESTRICT_DEFAULTS",
    "TRUNCATE_DEFAULTS",
    "SEQUENTIAL_DEFAULTS",
    "THETA_TRANSFORMS",
    "check_restrict_declaration",
    "check_truncate_declaration",
    "check_sequential_declaration",
    "check_theta_transform",
    "restriction_key",
    "train_restriction",
]

DEFAULTS: dict[str, Any] = {
    "num_simulations": 2000,
    "density_estimator": "maf",
    "num_draws": 4000,
    "chunk_size": 1000,
    "training_batch_size": 200,
    "learning_rate": 5e-4,
    "stop_after_epochs": 20,
    "max_num_epochs": 500,
    "sbc_simulations": 100,
    "sbc_draws": 200,
    "executor": None,
    "workers": None,
    "invalid": "exclude",
    "invalid_values": None,
    "ppc_draws": 100,
    "ppc_noise_seeds": 20,
    "restrict": None,
    "truncate": None,
    "sequential": None,
    "theta_transform": None,
}
"""Default settings of the route. Besides the simulation budget and ``sbi`` training settings:

``invalid`` (``"exclude"`` or ``"replace"``) and ``invalid_values`` (mapping feature name → value
or list of one value per feature; only with ``"replace"``) declare how non-finite features are
handled (module docstring); ``ppc_draws`` (posterior draws simulated for the posterior predictive
check, at most ``num_draws``; 0 disables) and ``ppc_noise_seeds`` (noise seeds under which the
posterior median is simulated; 0 disables, otherwise at least 2 so that an SD exists).

``restrict`` (default ``None``: off) turns on the restricted prior for simulators whose prior
draws are mostly invalid (module docstring, "Restricted prior"): a mapping with the required key
``simulations`` (pilot simulations per round, >= 10) and optional keys of
:data:`RESTRICT_DEFAULTS` (``rounds``, the classifier's ``model``, ``hidden_features``,
``num_blocks``, ``training_batch_size``, ``learning_rate``, ``validation_fraction``,
``stop_after_epochs``, ``max_num_epochs``, ``allowed_false_negatives``,
``acceptance_samples``, the seeded prior draws that estimate the accepted fraction, and
``loss_importance_weights``: ``True`` weights the classifier's loss so that the valid and invalid
classes count equally, sbi's option for imbalanced pilots). On ``pyloric-stg`` (30,000 pilot
draws, 0.9 % valid) the exact threshold accepted 100 % of the prior with the plain loss and 92 %
with the balanced one (65 % at ``allowed_false_negatives = 0.1``): a few hundred valid draws do
not outline the valid region in 31 dimensions, so more pilot rounds are needed there. With it,
``num_simulations`` is the size of the main bank drawn from the restricted prior (the pilot comes
on top), and ``sbc_simulations`` are drawn from the restricted prior too. Example (TOML):
``restrict = { simulations = 20000, rounds = 2 }``.

``truncate`` (default ``None``: off) adds truncated sequential rounds at the observation (module
docstring, "Truncated sequential rounds"): a mapping with the required keys ``rounds`` and
``simulations`` (per round) and the optional keys of :data:`TRUNCATE_DEFAULTS`. Example (TOML):
``truncate = { rounds = 2, simulations = 20000 }``.

``sequential`` (default ``None``: off) adds APT rounds at the observation (module docstring,
"Sequential rounds with the posterior as proposal"): a mapping with the required keys ``rounds``
and ``simulations`` (per round) and the optional keys of :data:`SEQUENTIAL_DEFAULTS`; it
excludes ``truncate``. Example (TOML): ``sequential = { rounds = 5, simulations = 5000 }``. On a
bounded prior use it with ``theta_transform = "logit"`` (a warning says so otherwise): with an
unbounded flow the atomic loss lets the mass outside the prior grow (measured on pyloric-stg:
0 % of the draws inside the prior after one round).

``theta_transform`` (default ``None``: the flow models θ directly) set to ``"logit"`` trains the
flow on θ mapped from the prior box to R^D (:mod:`mechzoo.inference._bounded`: logit per
coordinate, in log scale for log-uniform parameters), so the posterior has no leakage outside
the prior's bounds."""

#: Defaults of the optional keys of the ``sequential`` setting: ``num_atoms`` (atoms of the
#: atomic APT loss, sbi's default 10).
SEQUENTIAL_DEFAULTS: dict[str, Any] = {"num_atoms": 10}

#: Choices of the ``theta_transform`` setting (None: off).
THETA_TRANSFORMS = (None, "logit")

#: Defaults of the optional keys of the ``truncate`` setting: ``quantile`` (the posterior mass
#: left out of the high-probability region, TSNPE's ε), ``margin`` (the box is widened by this
#: fraction of its width on each side), ``posterior_draws`` (draws that set the threshold and the
#: box) and ``probe`` (box draws that estimate the acceptance).
TRUNCATE_DEFAULTS: dict[str, Any] = {"quantile": 1e-4, "margin": 0.1, "posterior_draws": 100_000, "probe": 20_000}

#: Choices of the ``invalid`` setting (module docstring).
INVALID_CHOICES = ("exclude", "replace")

#: Defaults of the keys of the ``restrict`` setting (``simulations`` has none: it is required).
#: The classifier settings are those of ``sbi.utils.RestrictionEstimator`` (``model``,
#: ``hidden_features``, ``num_blocks``) and its ``train`` (``training_batch_size``,
#: ``learning_rate``, ``validation_fraction``, ``stop_after_epochs``, ``max_num_epochs``) and
#: ``restrict_prior`` (``allowed_false_negatives``), with ``sbi``'s defaults except a finite
#: ``max_num_epochs``.
RESTRICT_DEFAULTS: dict[str, Any] = {
    "rounds": 1,
    "model": "resnet",
    "hidden_features": 100,
    "num_blocks": 2,
    "training_batch_size": 200,
    "learning_rate": 5e-4,
    "validation_fraction": 0.1,
    "stop_after_epochs": 20,
    "max_num_epochs": 500,
    "allowed_false_negatives": 0.0,
    "acceptance_samples": 20000,
    "loss_importance_weights": False,
}
#: Version of the restricted prior's sampler; part of the fingerprint, so banks drawn by an
#: older sampler are never extended by a newer one.
_RESTRICTED_SAMPLER_VERSION = 1


def check_restrict_declaration(restrict: Any) -> dict[str, Any] | None:
    """Validate the ``restrict`` setting; returns it with defaults filled in, or None when off.

    Usable without a problem (the entry schema can call it on an entry's ``[routes] npe`` table).

    Raises
    ------
    ValueError
        Not None nor a mapping; unknown keys; ``simulations`` missing or < 10; ``rounds`` < 1;
        ``model`` not ``"resnet"``/``"mlp"``; a non-positive size, rate or epoch count;
        ``validation_fraction`` or ``allowed_false_negatives`` outside [0, 1).
    """
    if restrict is None:
        return None
    if not isinstance(restrict, Mapping):
        raise ValueError(
            f"npe setting restrict must be None (off) or a mapping such as {{'simulations': 10000, 'rounds': 1}} (got {type(restrict).__name__} {restrict!r})"
        )
    known = {"simulations", *RESTRICT_DEFAULTS}
    unknown = sorted(set(map(str, restrict)) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in npe setting restrict; known: {sorted(known)}")
    if "simulations" not in restrict:
        raise ValueError("npe setting restrict needs 'simulations': the number of pilot simulations per round (e.g. restrict = {'simulations': 10000})")
    out = {**RESTRICT_DEFAULTS, **{str(k): v for k, v in restrict.items()}}

    def _integer(key: str, minimum: int) -> None:
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not float(v).is_integer() or v < minimum:
            raise ValueError(f"npe setting restrict[{key!r}] must be an integer >= {minimum} (got {v!r})")
        out[key] = int(v)

    _integer("simulations", 10)
    _integer("rounds", 1)
    for key in ("hidden_features", "num_blocks", "training_batch_size", "stop_after_epochs", "max_num_epochs", "acceptance_samples"):
        _integer(key, 1)
    if out["acceptance_samples"] < 100:
        raise ValueError(f"npe setting restrict['acceptance_samples'] must be >= 100 (got {out['acceptance_samples']})")
    if not isinstance(out["loss_importance_weights"], (bool, np.bool_)):
        raise ValueError(f"npe setting restrict['loss_importance_weights'] must be true or false (got {out['loss_importance_weights']!r})")
    out["loss_importance_weights"] = bool(out["loss_importance_weights"])
    if out["model"] not in ("resnet", "mlp"):
        raise ValueError(f"npe setting restrict['model'] must be 'resnet' or 'mlp' (got {out['model']!r})")
    for key in ("learning_rate", "validation_fraction", "allowed_false_negatives"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v):
            raise ValueError(f"npe setting restrict[{key!r}] must be a number (got {v!r})")
        out[key] = float(v)
    if not out["learning_rate"] > 0:
        raise ValueError(f"npe setting restrict['learning_rate'] must be > 0 (got {out['learning_rate']})")
    if not 0 < out["validation_fraction"] < 1:
        raise ValueError(f"npe setting restrict['validation_fraction'] must be in (0, 1) (got {out['validation_fraction']})")
    if not 0 <= out["allowed_false_negatives"] < 1:
        raise ValueError(f"npe setting restrict['allowed_false_negatives'] must be in [0, 1) (got {out['allowed_false_negatives']})")
    n_train = int((1 - out["validation_fraction"]) * out["simulations"])
    if n_train < out["training_batch_size"]:
        raise ValueError(
            f"npe setting restrict: the {out['simulations']} pilot simulations leave {n_train} for training the classifier, fewer than "
            f"one batch (training_batch_size = {out['training_batch_size']}); sbi drops incomplete batches, so the classifier would not "
            "be trained (fix: more simulations or a smaller training_batch_size)"
        )
    return out


def _check_rounds_declaration(name: str, value: Any, defaults: Mapping[str, Any], integers: tuple[tuple[str, int], ...]) -> dict[str, Any] | None:
    """Shared checks of the round settings (``truncate``, ``sequential``): None (off) or a mapping
    with the required ``rounds`` and ``simulations`` and the optional keys of ``defaults``;
    returns it with defaults filled in and the ``integers`` (key, minimum) checked and cast."""
    if value is None:
        return None
    example = f"{{'rounds': 2, 'simulations': {20000 if name == 'truncate' else 5000}}}"
    if not isinstance(value, Mapping):
        raise ValueError(f"npe setting {name} must be None (off) or a mapping such as {example} (got {type(value).__name__} {value!r})")
    known = {"rounds", "simulations", *defaults}
    unknown = sorted(set(map(str, value)) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in npe setting {name}; known: {sorted(known)}")
    missing = [k for k in ("rounds", "simulations") if k not in value]
    if missing:
        raise ValueError(f"npe setting {name} needs {missing} (e.g. {name} = {example})")
    out = {**defaults, **{str(k): v for k, v in value.items()}}
    for key, minimum in (("rounds", 1), ("simulations", 10), *integers):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
            raise ValueError(f"npe setting {name}[{key!r}] must be an integer >= {minimum} (got {v!r})")
        out[key] = int(v)
    return out


def check_truncate_declaration(truncate: Any) -> dict[str, Any] | None:
    """Validate the ``truncate`` setting; returns it with defaults filled in, or None when off.

    Raises ``ValueError`` naming the bad key and the fix."""
    out = _check_rounds_declaration("truncate", truncate, TRUNCATE_DEFAULTS, (("posterior_draws", 100), ("probe", 100)))
    if out is None:
        return None
    if not 0.0 <= float(out["quantile"]) < 0.5:
        raise ValueError(f"npe setting truncate['quantile'] must be in [0, 0.5) (got {out['quantile']!r}); TSNPE uses 1e-4")
    if not float(out["margin"]) >= 0.0:
        raise ValueError(f"npe setting truncate['margin'] must be >= 0 (got {out['margin']!r})")
    out["quantile"], out["margin"] = float(out["quantile"]), float(out["margin"])
    return out


def check_sequential_declaration(sequential: Any) -> dict[str, Any] | None:
    """Validate the ``sequential`` setting; returns it with defaults filled in, or None when off.

    Raises ``ValueError`` for a non-mapping, unknown keys, ``rounds`` < 1, ``simulations`` < 10
    or ``num_atoms`` < 2."""
    return _check_rounds_declaration("sequential", sequential, SEQUENTIAL_DEFAULTS, (("num_atoms", 2),))


def check_theta_transform(value: Any) -> str | None:
    """Validate the ``theta_transform`` setting (None or ``"logit"``)."""
    if value not in THETA_TRANSFORMS:
        raise ValueError(f"npe setting theta_transform must be one of {list(THETA_TRANSFORMS)} (got {value!r})")
    return value


def check_invalid_declaration(invalid: Any, invalid_values: Any) -> None:
    """Validate the ``invalid`` / ``invalid_values`` settings without knowing the feature names.

    Used by the entry schema (an entry's ``[routes] npe`` table) and by :func:`run`.

    Raises
    ------
    ValueError
        Unknown ``invalid`` choice; ``"replace"`` without values; values given with
        ``"exclude"``; values that are neither a mapping of names to numbers nor a list of
        numbers; non-finite replacement values.
    """
    if invalid not in INVALID_CHOICES:
        raise ValueError(f"npe setting invalid = {invalid!r} is not one of {list(INVALID_CHOICES)}")
    if invalid == "exclude":
        if invalid_values is not None:
            raise ValueError(
                "npe setting invalid_values is used only with invalid = 'replace' (fix: set invalid = 'replace' or remove invalid_values)"
            )
        return
    if invalid_values is None or (hasattr(invalid_values, "__len__") and len(invalid_values) == 0):
        raise ValueError(
            "npe setting invalid = 'replace' needs invalid_values: a mapping {feature name: replacement value} "
            "or a list with one value per feature"
        )
    if isinstance(invalid_values, Mapping):
        items = list(invalid_values.items())
    elif isinstance(invalid_values, (list, tuple, np.ndarray)):
        items = list(enumerate(np.asarray(invalid_values).reshape(-1).tolist()))
    else:
        raise ValueError(
            f"npe setting invalid_values must be a mapping {{feature name: value}} or a list of values (got {type(invalid_values).__name__})"
        )
    for key, value in items:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value):
            raise ValueError(f"npe setting invalid_values[{key!r}] = {value!r} must be a finite number")


def invalid_replacement(invalid: str, invalid_values: Any, feature_names: list[str]) -> np.ndarray | None:
    """The per-feature replacement values (F,) of the ``invalid`` setting, NaN where a feature has
    none; ``None`` for ``"exclude"``. Validates the settings against the feature names."""
    check_invalid_declaration(invalid, invalid_values)
    if invalid == "exclude":
        return None
    names = list(feature_names)
    out = np.full(len(names), np.nan)
    if isinstance(invalid_values, Mapping):
        unknown = sorted(set(map(str, invalid_values)) - set(names))
        if unknown:
            raise ValueError(f"npe setting invalid_values names unknown feature(s) {unknown}; the features are {names}")
        for k, v in invalid_values.items():
            out[names.index(str(k))] = float(v)
    else:
        values = np.asarray(invalid_values, dtype=np.float64).reshape(-1)
        if values.size != len(names):
            raise ValueError(
                f"npe setting invalid_values has {values.size} values but the entry has {len(names)} features {names}; "
                "give one value per feature or a mapping {feature name: value}"
            )
        out[:] = values
    return out


def handle_invalid(x: np.ndarray, replacement: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Apply the invalid-feature rule to features ``x`` (n, F).

    Parameters
    ----------
    x : ndarray (n, F)
        Raw simulated features.
    replacement : ndarray (F,) or None
        From :func:`invalid_replacement`: ``None`` excludes every simulation with a non-finite
        feature; otherwise non-finite values of feature j are replaced by ``replacement[j]``
        where that is finite, and simulations still holding a non-finite value are excluded.

    Returns
    -------
    x_used : ndarray (n, F)
        Features after replacement (rows that are not ``valid`` still hold non-finite values).
    valid : ndarray of bool (n,)
        Rows kept (every feature finite after replacement).
    counts : dict
        ``n_invalid`` (rows with any non-finite raw feature), ``n_replaced`` (kept rows in which
        a value was replaced), ``n_excluded`` (rows dropped), ``invalid_feature_counts`` and
        ``replaced_feature_counts`` (per feature, lists of int).
    """
    x = np.asarray(x, dtype=np.float64)
    nonfinite = ~np.isfinite(x)
    replaced = np.zeros_like(nonfinite)
    x_used = x
    if replacement is not None:
        replaced = nonfinite & np.isfinite(replacement)[None, :]
        x_used = np.where(replaced, replacement[None, :], x)
    valid = np.all(np.isfinite(x_used), axis=1)
    counts = {
        "n_invalid": int(nonfinite.any(axis=1).sum()),
        "n_replaced": int((replaced.any(axis=1) & valid).sum()),
        "n_excluded": int((~valid).sum()),
        "invalid_feature_counts": nonfinite.sum(axis=0).astype(int).tolist(),
        "replaced_feature_counts": replaced.sum(axis=0).astype(int).tolist(),
    }
    return x_used, valid, counts


def _has_bounded_coordinates(problem: Problem) -> bool:
    """Whether any prior coordinate of ``problem`` has a finite bound (the case the logit
    ``theta_transform`` is for)."""
    for p in problem.torch_prior().parameters:
        lo, hi = p.prior.bounds(p.shape)
        if np.any(np.isfinite(lo)) or np.any(np.isfinite(hi)):
            return True
    return False


def _validate_settings(problem: Problem, settings: Mapping[str, Any]) -> np.ndarray | None:
    """Check the settings' values; returns the replacement vector of the ``invalid`` rule."""
    if int(settings["num_simulations"]) < 10:
        raise ValueError(f"num_simulations must be >= 10 (got {settings['num_simulations']})")
    for key in ("sbc_simulations", "ppc_draws", "ppc_noise_seeds"):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not float(value).is_integer() or value < 0:
            raise ValueError(f"npe setting {key} must be an integer >= 0 (got {value!r}); 0 disables the check")
    if int(settings["ppc_noise_seeds"]) == 1:
        raise ValueError("npe setting ppc_noise_seeds must be 0 (off) or >= 2: the noise SD at the median draw needs two simulations")
    check_restrict_declaration(settings["restrict"])
    check_truncate_declaration(settings["truncate"])
    if check_sequential_declaration(settings["sequential"]) is not None and settings["truncate"] is not None:
        raise ValueError("npe settings truncate and sequential exclude each other: choose the truncated (TSNPE) or the posterior (APT) proposals")
    if check_theta_transform(settings["theta_transform"]) is None and settings["sequential"] is not None and _has_bounded_coordinates(problem):
        warnings.warn(
            "npe setting sequential (APT) with an unbounded flow on a bounded prior: the atomic loss leaves the flow's mass outside the prior "
            "unconstrained, and it can leak out (on pyloric-stg, 0 % of draws stayed inside the prior after one round, so the next round's "
            "rejection sampler stalled); set theta_transform = 'logit'",
            UserWarning,
            stacklevel=3,
        )
    return invalid_replacement(settings["invalid"], settings["invalid_values"], problem.feature_names())


def simulate_bank(
    problem: Problem,
    n: int,
    *,
    seed: int,
    stream: str = "simulate",
    chunk_size: int = 1000,
    progress: bool = True,
    executor: Any = None,
    workers: int | None = None,
    prior: Any = None,
):
    """θ ~ prior and features of their simulations, from the on-disk simulation bank.

    The bank (:func:`mechzoo.inference.campaign.run_campaign`) is keyed by entry, configuration,
    seed and stream; it is extended only by the rows it lacks and resumes after an interruption.
    Row i depends only on (seed, stream, i). Returns ``(theta (n, D), x (n, F))``.
    ``workers=None`` uses every core for banks of 20,000 rows or more and runs small banks
    in-process (starting worker processes costs seconds); results do not depend on it.

    ``prior``: draw θ from this distribution instead of the entry's prior, e.g. a restricted prior
    (:class:`ClassifierRestrictedPrior`). It must have ``sample_seeded(n, seed)`` and a
    ``fingerprint`` (str) identifying it; the fingerprint enters the bank key (as the campaign
    setting ``restricted_prior``), so banks of different priors are never mixed. θ is drawn in
    the driver process, so this works with every executor.
    """
    from .campaign import run_campaign

    if workers is None and executor is None and n < 20000:
        workers = 1
    key_settings = None
    if prior is not None:
        fingerprint = getattr(prior, "fingerprint", None)
        if not isinstance(fingerprint, str) or not hasattr(prior, "sample_seeded"):
            raise TypeError("simulate_bank(prior=...) needs a distribution with sample_seeded(n, seed) and a str fingerprint (e.g. a restricted prior)")
        key_settings = {"restricted_prior": fingerprint}
        problem = _with_prior(problem, prior)
    bank = run_campaign(
        problem,
        n,
        seed=seed,
        stream=stream,
        chunk_size=chunk_size,
        progress=progress,
        executor=executor,
        workers=workers,
        cache_dir=cache_dir(),
        settings=key_settings,
    )
    return np.asarray(bank.theta), np.asarray(bank.x)


def _with_prior(problem: Problem, prior: Any) -> Problem:
    """A shallow copy of ``problem`` whose ``torch_prior()`` returns ``prior``: same model, data,
    call counter and instance overrides (the campaign draws θ from ``problem.torch_prior()``)."""
    clone = copy.copy(problem)
    clone.torch_prior = lambda: prior  # type: ignore[method-assign]
    return clone


# ============================================================================ restricted prior
_RESTRICTION_CLASSES: tuple[type, type] | None = None


def _restriction_classes() -> tuple[type, type]:
    """``(ClassifierRestrictedPrior, RestrictedSupport)``.

    Defined on first use, so that importing this module does not import torch (``import mechzoo``
    imports it). Instances pickle through the module-level functions
    :func:`_rebuild_restricted_prior` / :func:`_rebuild_restricted_support`, so a saved posterior
    reloads in a fresh process. Defining them registers ``RestrictedSupport`` with
    ``torch.distributions.biject_to`` / ``transform_to`` (delegating to the base support), which
    ``sbi`` needs to build a posterior's parameter transform.
    """
    global _RESTRICTION_CLASSES
    if _RESTRICTION_CLASSES is not None:
        return _RESTRICTION_CLASSES
    import torch
    from torch.distributions import biject_to, constraints, transform_to

    from ._rejection import RejectionPrior

    class RestrictedSupport(constraints.Constraint):
        """The base prior's support intersected with the classifier-accepted region."""

        def __init__(self, base, accepts):
            super().__init__()
            self.base = base
            self.accepts = accepts
            self.is_discrete = bool(getattr(base, "is_discrete", False))
            self.event_dim = int(getattr(base, "event_dim", 1))

        def check(self, value):
            value = torch.as_tensor(value)
            inside = self.base.check(value)
            if inside.dim() == value.dim():  # an elementwise base constraint
                inside = inside.all(-1)
            return inside & self.accepts(value)

        def __reduce__(self):
            return (_rebuild_restricted_support, (self.base, self.accepts))

        def __repr__(self) -> str:
            return f"RestrictedSupport({self.base!r})"

    class ClassifierRestrictedPrior(RejectionPrior):
        """The prior restricted to the region accepted by the restriction classifier(s).

        p_r(θ) = p(θ) 1[θ ∈ A] / P_p(A), with A the intersection of the accepted regions of the
        ``sbi`` ``RestrictedPrior`` objects in ``regions`` (one per restriction round; a θ is in a
        region where that object's unnormalised ``log_prob`` is finite). Sampling is rejection
        from the base prior (:class:`~mechzoo.inference._rejection.RejectionPrior`). ``info``
        holds the estimated acceptance P_p(A) (``acceptance``, from ``n_probe`` seeded prior
        draws), the mean and variance of the accepted probe draws and the ``fingerprint`` that
        identifies the restriction in bank keys.
        """

        _what = "the classifier-restricted prior (retrain the restriction with more pilot simulations)"

        def __init__(self, base, regions, info):
            self.regions = list(regions)
            super().__init__(base, info)

        @property
        def support(self):
            return RestrictedSupport(self.base.support, self.accepts)

        def accepts(self, theta) -> "torch.Tensor":
            """Boolean tensor of θ's batch shape: θ lies in every round's accepted region (and in
            the base prior's support)."""
            theta = torch.as_tensor(theta)
            batch = theta.shape[:-1]
            flat = theta.reshape(-1, theta.shape[-1]).to(torch.float32)  # the classifiers are float32
            ok = torch.ones(flat.shape[0], dtype=torch.bool)
            if flat.shape[0]:
                with torch.no_grad():
                    for region in self.regions:
                        ok &= torch.isfinite(region.log_prob(flat, norm_restricted_prior=False))
            return ok.reshape(batch)

        def _propose(self, n: int) -> "torch.Tensor":
            return self.base.sample(torch.Size([n]))

        def log_prob(self, value):
            value = torch.as_tensor(value)
            lp = torch.as_tensor(self.base.log_prob(value), dtype=torch.float64)
            inside = self.accepts(value)
            return torch.where(inside, lp - math.log(self.acceptance), torch.full_like(lp, -math.inf))

        def __reduce__(self):
            return (_rebuild_restricted_prior, (self.base, self.regions, self.info))

        def __repr__(self) -> str:
            return f"ClassifierRestrictedPrior(rounds={len(self.regions)}, acceptance={self.info.get('acceptance', float('nan')):.4g}, fingerprint={self.info.get('fingerprint', '')[:16]})"

    for cls in (RestrictedSupport, ClassifierRestrictedPrior):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__  # instances pickle through __reduce__
    biject_to.register(RestrictedSupport, lambda c: biject_to(c.base))
    transform_to.register(RestrictedSupport, lambda c: transform_to(c.base))
    _RESTRICTION_CLASSES = (ClassifierRestrictedPrior, RestrictedSupport)
    return _RESTRICTION_CLASSES


def _rebuild_restricted_prior(base, regions, info):
    """Unpickling of a ``ClassifierRestrictedPrior`` (its class is defined on first use)."""
    return _restriction_classes()[0](base, regions, info)


def _rebuild_restricted_support(base, accepts):
    """Unpickling of a ``RestrictedSupport``."""
    return _restriction_classes()[1](base, accepts)


def _torch_seed(seed: int, stream: str) -> int:
    """A 63-bit torch seed that depends only on (seed, stream)."""
    return int(seeds_for(int(seed), 1, stream=stream)[0] >> np.uint64(1))


def _module_hash(module) -> str:
    """SHA-256 of a torch module's state (parameter and buffer names and bytes)."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _make_restricted_prior(base, regions, *, key: str, classifier_hashes: list[str], probe_seed: int, n_probe: int):
    """Build the restricted prior of ``regions`` and estimate its acceptance on ``n_probe``
    seeded prior draws; its fingerprint hashes the key, the classifiers, the probe's accepted
    set and the sampler version."""
    import torch

    cls = _restriction_classes()[0]
    prior = cls(base, regions, {})
    probe = base.sample_seeded(int(n_probe), int(probe_seed)).to(torch.float64)
    accepted = prior.accepts(probe)
    n_accepted = int(accepted.sum())
    if n_accepted == 0:
        raise RuntimeError(
            f"the restriction classifier accepts none of {n_probe} prior draws; it cannot define a restricted prior "
            "(fix: more pilot simulations in restrict['simulations'], or a larger allowed region: allowed_false_negatives = 0)"
        )
    inside = probe[accepted]
    variance = inside.var(0) if n_accepted > 1 else torch.as_tensor(base.variance, dtype=torch.float64)
    info = {
        "key": key,
        "rounds": len(regions),
        "classifier_hashes": list(classifier_hashes),
        "n_probe": int(n_probe),
        "probe_seed": int(probe_seed),
        "n_probe_accepted": n_accepted,
        "acceptance": n_accepted / int(n_probe),
        "mean": inside.mean(0).tolist(),
        "variance": variance.tolist(),
        "sampler_version": _RESTRICTED_SAMPLER_VERSION,
    }
    h = hashlib.sha256(json.dumps({k: info[k] for k in ("key", "rounds", "classifier_hashes", "n_probe", "probe_seed", "sampler_version")}, sort_keys=True).encode())
    h.update(np.packbits(accepted.numpy()).tobytes())
    info["fingerprint"] = h.hexdigest()
    prior.info = info
    return prior


def restriction_key(problem: Problem, settings: Mapping[str, Any], seed: int) -> str:
    """Content hash of what determines the restriction of the ``restrict`` setting: entry (and
    its hash), configuration, pinned parameters, the ``invalid`` rule (it defines *valid*), the
    ``restrict`` settings and the seed."""
    restrict = check_restrict_declaration(settings.get("restrict"))
    if restrict is None:
        raise ValueError("restriction_key needs the npe setting restrict (it is None: off)")
    replacement = invalid_replacement(settings.get("invalid", "exclude"), settings.get("invalid_values"), problem.feature_names())
    content = {
        "kind": "mechzoo-npe-restriction",
        "entry": problem.entry_id,
        "entry_hash": problem.entry_hash,
        "config": dict(problem.config),
        "pinned": {k: np.asarray(v).tolist() for k, v in sorted(problem.pinned.items())},
        "invalid": {"rule": settings.get("invalid", "exclude"), "values": None if replacement is None else [None if np.isnan(v) else float(v) for v in replacement]},
        "restrict": restrict,
        "seed": int(seed),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _restriction_stream(k: int) -> str:
    """Seed stream of pilot round k (1-based)."""
    return "restrict" if k == 1 else f"restrict-{k}"


def _valid_label(x):
    """``RestrictionEstimator`` decision criterion: x holds the valid label (1/0) in column 0."""
    return x[:, 0] > 0.5


def train_restriction(problem: Problem, settings: Mapping[str, Any], *, seed: int = 0, progress: bool = True):
    """The pilot simulations, classifier and restricted prior of the ``restrict`` setting.

    Cached in ``<cache>/npe/<entry>-restriction-<key>.pt`` (the restricted prior after every round)
    and ``.json`` (the record) under :func:`restriction_key`: a cached restriction is reused
    without training (the pilot banks are read back from the bank cache), so a main bank that
    was interrupted resumes with the same restricted prior. See the module docstring for the
    procedure.

    Returns
    -------
    prior : ClassifierRestrictedPrior
        The restricted prior after the last round.
    record : dict
        The ``restriction_*`` figures of the module docstring (without the NPE-side ones), and
        ``reused_restriction`` (1 when loaded from the cache).
    rounds : list of (theta (n, D), x (n, F))
        The raw pilot simulations of every round.

    Raises
    ------
    ValueError
        Bad settings (:func:`check_restrict_declaration`).
    RuntimeError
        A pilot with fewer than 2 valid simulations, or a classifier validation split without a
        valid simulation, or a restriction that accepts no prior draw.
    """
    import torch

    settings = {**DEFAULTS, **dict(settings)}
    restrict = check_restrict_declaration(settings["restrict"])
    if restrict is None:
        raise ValueError("train_restriction needs the npe setting restrict (it is None: off)")
    replacement = invalid_replacement(settings["invalid"], settings["invalid_values"], problem.feature_names())
    key = restriction_key(problem, settings, seed)
    path = cache_dir() / "npe" / f"{problem.entry_id}-restriction-{key}.pt"
    record_path = path.with_suffix(".json")
    n0, n_rounds = int(restrict["simulations"]), int(restrict["rounds"])
    bank_kw = {"chunk_size": int(settings["chunk_size"]), "progress": progress, "executor": settings["executor"], "workers": settings["workers"]}

    if path.exists() and record_path.exists():
        priors = torch.load(path, map_location="cpu", weights_only=False)["priors"]
        record = {**json.loads(record_path.read_text()), "reused_restriction": 1}
        rounds = [simulate_bank(problem, n0, seed=seed, stream=_restriction_stream(k), prior=None if k == 1 else priors[k - 2], **bank_kw) for k in range(1, n_rounds + 1)]
        return priors[-1], record, rounds

    from sbi.utils import RestrictionEstimator

    base = problem.torch_prior()
    probe_seed = _torch_seed(seed, "restrict-probe")
    estimator = None
    regions: list[Any] = []
    hashes: list[str] = []
    priors: list[Any] = []
    rounds: list[tuple[np.ndarray, np.ndarray]] = []
    fractions: list[float] = []
    t_sim = t_train = 0.0
    current = None
    for k in range(1, n_rounds + 1):
        t = time.perf_counter()
        theta, x = simulate_bank(problem, n0, seed=seed, stream=_restriction_stream(k), prior=current, **bank_kw)
        t_sim += time.perf_counter() - t
        rounds.append((theta, x))
        _, valid, counts = handle_invalid(x, replacement)
        fractions.append(float(valid.mean()))
        if k == 1 and valid.sum() < 2:
            raise RuntimeError(
                f"only {int(valid.sum())} of {n0} prior pilot simulations are valid under invalid = {settings['invalid']!r} "
                f"(non-finite values per feature {dict(zip(problem.feature_names(), counts['invalid_feature_counts']))}); "
                "the restriction classifier needs valid examples (fix: a larger restrict['simulations'])"
            )
        t = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_torch_seed(seed, f"restrict-classifier-{k}"))
            if estimator is None:
                estimator = RestrictionEstimator(
                    prior=base,
                    model=restrict["model"],
                    decision_criterion=_valid_label,
                    hidden_features=restrict["hidden_features"],
                    num_blocks=restrict["num_blocks"],
                )
            estimator.append_simulations(torch.from_numpy(np.array(theta, dtype=np.float32)), torch.from_numpy(valid.astype(np.float32)[:, None]))
            with contextlib.nullcontext() if progress else contextlib.redirect_stdout(io.StringIO()):  # sbi prints the epochs
                classifier = estimator.train(
                    training_batch_size=restrict["training_batch_size"],
                    learning_rate=restrict["learning_rate"],
                    validation_fraction=restrict["validation_fraction"],
                    stop_after_epochs=restrict["stop_after_epochs"],
                    max_num_epochs=restrict["max_num_epochs"],
                    loss_importance_weights=restrict["loss_importance_weights"],
                )
            try:
                with torch.no_grad():  # the threshold is computed from the classifier's outputs
                    region = estimator.restrict_prior(allowed_false_negatives=restrict["allowed_false_negatives"])
            except (RuntimeError, IndexError) as exc:
                raise RuntimeError(
                    f"the restriction classifier's validation split (validation_fraction = {restrict['validation_fraction']} of the "
                    f"{n0} prior pilot simulations, {int(valid.sum())} of them valid) holds no valid simulation, so its threshold "
                    "cannot be set (fix: a larger restrict['simulations'] or validation_fraction)"
                ) from exc
        regions.append(copy.deepcopy(region))  # frozen: the estimator keeps training the same network in later rounds
        hashes.append(_module_hash(classifier))
        current = _make_restricted_prior(base, regions, key=key, classifier_hashes=hashes, probe_seed=probe_seed, n_probe=restrict["acceptance_samples"])
        priors.append(current)
        t_train += time.perf_counter() - t

    theta1, x1 = rounds[0]
    valid1 = handle_invalid(x1, replacement)[1]
    accepted1 = current.accepts(theta1).numpy()
    record = {
        "restriction_key": key,
        "restriction_fingerprint": current.fingerprint,
        "restriction_rounds": n_rounds,
        "n_restriction_simulations": n0 * n_rounds,
        "restriction_valid_fraction": fractions[0],
        "restriction_round_valid_fractions": fractions,
        "restricted_prior_acceptance": current.acceptance,
        "restriction_round_acceptance": [p.acceptance for p in priors],
        "restriction_pilot_valid_accepted": float(accepted1[valid1].mean()) if valid1.any() else float("nan"),
        "restriction_pilot_invalid_rejected": float((~accepted1[~valid1]).mean()) if (~valid1).any() else float("nan"),
        "restriction_training_wall_time_s": t_train,
        "restriction_simulation_wall_time_s": t_sim,
        "restriction_path": str(path),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"priors": priors}, tmp)
    os.replace(tmp, path)
    tmp_json = path.with_suffix(".json.tmp")
    tmp_json.write_text(json.dumps(record))
    os.replace(tmp_json, record_path)
    record["reused_restriction"] = 0
    return current, record, rounds


_TRAINING_KEYS = ("num_simulations", "density_estimator", "training_batch_size", "learning_rate", "stop_after_epochs", "max_num_epochs")


def estimator_key(problem: Problem, settings: Mapping[str, Any], seed: int) -> str:
    """Content hash of what determines a trained estimator: entry (and its file hash), simulator
    configuration, training settings, the ``invalid`` rule (when not the default ``"exclude"``), the
    ``restrict`` settings (when on) and seed. Observation-dependent settings are excluded, so one trained estimator serves every
    observation (amortisation) — except with ``truncate``, whose estimator is the observation's."""
    content = {
        "entry": problem.entry_id,
        "entry_hash": problem.entry_hash,
        "config": {k: v for k, v in problem.config.items()},
        "training": {k: settings[k] for k in _TRAINING_KEYS},
        "seed": int(seed),
    }
    if problem.pinned:  # only when some parameters are pinned, so that existing keys are unchanged
        content["pinned"] = {k: np.asarray(v).tolist() for k, v in sorted(problem.pinned.items())}
    if settings.get("invalid", "exclude") != "exclude":  # the training set depends on it; "exclude" keeps existing keys
        replacement = invalid_replacement(settings["invalid"], settings.get("invalid_values"), problem.feature_names())
        content["invalid"] = {"rule": settings["invalid"], "values": [None if np.isnan(v) else float(v) for v in replacement]}
    if settings.get("restrict") is not None:  # only when on, so that existing keys are unchanged
        content["restrict"] = check_restrict_declaration(settings["restrict"])
    if settings.get("truncate") is not None:  # not amortised: the estimator belongs to the observation
        content["truncate"] = check_truncate_declaration(settings["truncate"])
        content["observation"] = np.asarray(problem.observed_features(), dtype=np.float64).tolist()
    if settings.get("sequential") is not None:  # not amortised either
        content["sequential"] = check_sequential_declaration(settings["sequential"])
        content["observation"] = np.asarray(problem.observed_features(), dtype=np.float64).tolist()
    if settings.get("theta_transform") is not None:  # only when on, so that existing keys are unchanged
        content["theta_transform"] = settings["theta_transform"]
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _train(
    problem: Problem, settings: Mapping[str, Any], seed: int, progress: bool, replacement: np.ndarray | None, path: Path | None = None
) -> tuple[Any, dict[str, Any]]:
    """Simulate the bank and train the estimator on the simulations the ``invalid`` rule keeps
    (:func:`handle_invalid` with ``replacement``); returns (posterior, training record).

    With ``truncate`` (module docstring, "Truncated sequential rounds") the truncated rounds
    follow (:func:`_truncated_rounds`); ``path`` (the estimator's cache path) names the cached
    posterior of every round.

    With ``restrict`` (module docstring, "Restricted prior"): the restriction is trained (or read
    from the cache) first, the bank (stream ``"restricted"``) is drawn from the restricted prior,
    the training set pools the bank's valid simulations with the pilot's valid simulations inside
    the final accepted region, and the restricted prior is the NPE prior."""
    import torch
    from sbi.inference import NPE
    from torch.utils.tensorboard import SummaryWriter

    restrict = check_restrict_declaration(settings.get("restrict"))
    n = int(settings["num_simulations"])
    bank_kw = {"chunk_size": int(settings["chunk_size"]), "progress": progress, "executor": settings["executor"], "workers": settings["workers"]}
    extra: dict[str, Any] = {}
    if restrict is None:
        prior = problem.torch_prior()
        t0 = time.perf_counter()
        theta, x = simulate_bank(problem, n, seed=seed, **bank_kw)
        t_sim = time.perf_counter() - t0
        in_region = np.ones(n, dtype=bool)
    else:
        prior, extra, rounds = train_restriction(problem, settings, seed=seed, progress=progress)
        t0 = time.perf_counter()
        theta_bank, x_bank = simulate_bank(problem, n, seed=seed, stream="restricted", prior=prior, **bank_kw)
        t_sim = time.perf_counter() - t0
        theta_pilot = np.concatenate([r[0] for r in rounds], axis=0)
        x_pilot = np.concatenate([r[1] for r in rounds], axis=0)
        # the bank's θ are in the region by construction; pilot θ are kept only inside the final region
        in_region = np.concatenate([prior.accepts(theta_pilot).numpy(), np.ones(n, dtype=bool)])
        theta = np.concatenate([theta_pilot, theta_bank], axis=0)
        x = np.concatenate([x_pilot, x_bank], axis=0)
    n_total = theta.shape[0]
    x, valid, counts = handle_invalid(x, replacement)
    keep = valid & in_region
    if keep.sum() < 10:
        raise RuntimeError(
            f"only {int(keep.sum())} of {n_total} simulations are valid under invalid = {settings['invalid']!r} "
            f"(non-finite values per feature {dict(zip(problem.feature_names(), counts['invalid_feature_counts']))}); cannot train NPE "
            "(fix: a larger num_simulations, invalid = 'replace' with invalid_values for the features that are often missing, "
            "or the restrict setting for a simulator whose prior draws are mostly invalid)"
        )
    if restrict is not None:
        n_pilot = n_total - n
        extra.update(
            {
                "n_bank_simulations": n,
                "bank_valid_fraction": float(valid[n_pilot:].mean()),
                "n_restriction_training_simulations": int(keep[:n_pilot].sum()),
                "n_restriction_valid_rejected": int((valid & ~in_region)[:n_pilot].sum()),
            }
        )
    t1 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        writer = SummaryWriter(log_dir=str(cache_dir() / "sbi-logs"))  # sbi would write into the working folder
        density_estimator: Any = str(settings["density_estimator"])
        if check_theta_transform(settings.get("theta_transform")) == "logit":
            from sbi.neural_nets import posterior_nn

            from ._bounded import bounded_builder, box_transform_for

            density_estimator = bounded_builder(posterior_nn(model=density_estimator), box_transform_for(prior))
        inference = NPE(
            prior=prior,
            density_estimator=density_estimator,
            show_progress_bars=progress,
            summary_writer=writer,
        )
        inference.append_simulations(torch.as_tensor(theta[keep], dtype=torch.float32), torch.as_tensor(x[keep], dtype=torch.float32))
        train_kw = {
            "training_batch_size": int(settings["training_batch_size"]),
            "learning_rate": float(settings["learning_rate"]),
            "stop_after_epochs": int(settings["stop_after_epochs"]),
            "max_num_epochs": int(settings["max_num_epochs"]),
            "show_train_summary": False,
        }
        estimator = inference.train(**train_kw)
        posterior = inference.build_posterior(estimator)
        epochs = [int(inference.summary.get("epochs_trained", [0])[-1])]
        if check_truncate_declaration(settings.get("truncate")) is not None:
            posterior, trunc, trunc_counts = _truncated_rounds(problem, settings, seed, progress, replacement, path, inference, posterior, prior, train_kw, bank_kw)
            extra.update(trunc)
            n_total += trunc["n_truncation_simulations"]
            _add_counts(counts, trunc_counts)
            keep_total = int(keep.sum()) + trunc["n_truncation_training_simulations"]
            epochs += trunc["truncation_round_epochs"]
        elif check_sequential_declaration(settings.get("sequential")) is not None:
            posterior, seq, seq_counts = _sequential_rounds(problem, settings, seed, progress, replacement, path, inference, posterior, bank_kw, train_kw)
            extra.update(seq)
            n_total += seq["n_sequential_simulations"]
            _add_counts(counts, seq_counts)
            keep_total = int(keep.sum()) + seq["n_sequential_training_simulations"]
            epochs += seq["sequential_round_epochs"]
        else:
            keep_total = int(keep.sum())
        writer.close()
    record = {
        "n_simulations": n_total,
        "n_training_simulations": keep_total,
        "n_invalid_simulations": counts["n_invalid"],
        "n_replaced_simulations": counts["n_replaced"],
        "n_excluded_simulations": counts["n_excluded"],
        "invalid_feature_counts": counts["invalid_feature_counts"],
        "replaced_feature_counts": counts["replaced_feature_counts"],
        "invalid_rule": str(settings["invalid"]),
        "simulation_wall_time_s": t_sim,
        "training_wall_time_s": time.perf_counter() - t1 - float(extra.get("truncation_simulation_wall_time_s", 0.0)) - float(extra.get("sequential_simulation_wall_time_s", 0.0)),
        "epochs_trained": sum(epochs),
        **extra,
    }
    return posterior, record


def _new_counts(n_features: int) -> dict[str, Any]:
    """Zero invalid counts (the record of :func:`handle_invalid`) for ``n_features`` features."""
    return {"n_invalid": 0, "n_replaced": 0, "n_excluded": 0, "invalid_feature_counts": [0] * n_features, "replaced_feature_counts": [0] * n_features}


def _add_counts(totals: dict[str, Any], counts: Mapping[str, Any]) -> None:
    """Add the invalid counts ``counts`` (of :func:`handle_invalid`) into ``totals`` in place."""
    for k in ("n_invalid", "n_replaced", "n_excluded"):
        totals[k] += counts[k]
    for k in ("invalid_feature_counts", "replaced_feature_counts"):
        totals[k] = [int(a) + int(b) for a, b in zip(totals[k], counts[k])]


def _train_round(inference, path: Path | None, r: int, train) -> tuple[Any, int]:
    """Train round ``r`` of the sequential settings with ``train()`` (returns the estimator), or,
    when the round's posterior is cached beside the estimator at ``path`` (a resumed run), load
    it into the network instead. Returns (posterior, epochs trained: 0 when loaded)."""
    import torch

    cached = None if path is None else path.with_name(f"{path.stem}-round-{r}.pt")
    if cached is not None and cached.exists():  # a resumed campaign: the same round's network
        posterior = load_posterior(cached)
        inference._neural_net.load_state_dict(posterior.posterior_estimator.state_dict())
        return posterior, 0
    posterior = inference.build_posterior(train())
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        torch.save(posterior, tmp)
        os.replace(tmp, cached)
    return posterior, int(inference.summary.get("epochs_trained", [0])[-1])


def _truncated_rounds(problem, settings, seed, progress, replacement, path, inference, posterior, prior, train_kw, bank_kw):
    """The TSNPE rounds of the ``truncate`` setting (module docstring), inside the caller's
    seeded torch RNG. Returns (final posterior, record, invalid counts of the round banks)."""
    import torch

    from ._truncation import make_truncated_prior

    trunc = check_truncate_declaration(settings["truncate"])
    x_o = handle_invalid(problem.observed_features()[None], replacement)[0][0]
    key = estimator_key(problem, settings, seed)
    rec: dict[str, Any] = {"amortised": 0, "truncation_rounds": trunc["rounds"], "truncation_round_simulations": [], "truncation_round_valid_fractions": [],
                           "truncation_round_acceptance": [], "truncation_round_box_mass": [], "truncation_round_in_support": [], "truncation_round_epochs": [], "truncation_round_fingerprints": []}
    totals = _new_counts(len(problem.feature_names()))
    t_sim = 0.0
    n_sims = n_keep = 0
    proposal = None
    for r in range(1, trunc["rounds"] + 1):
        proposal = make_truncated_prior(
            prior, copy.deepcopy(posterior), x_o, proposal, quantile=trunc["quantile"], margin=trunc["margin"], n_draws=trunc["posterior_draws"],
            n_probe=trunc["probe"], seed=_torch_seed(seed, f"truncate-{r}"), key=key,
        )
        t = time.perf_counter()
        theta, x = simulate_bank(problem, trunc["simulations"], seed=seed, stream=f"truncate-{r}", prior=proposal, **bank_kw)
        t_sim += time.perf_counter() - t
        x, valid, counts = handle_invalid(x, replacement)
        _add_counts(totals, counts)
        inference.append_simulations(torch.as_tensor(theta[valid], dtype=torch.float32), torch.as_tensor(x[valid], dtype=torch.float32))
        posterior, epochs = _train_round(inference, path, r, lambda: inference.train(force_first_round_loss=True, **train_kw))
        rec["truncation_round_epochs"].append(epochs)
        n_sims += int(theta.shape[0])
        n_keep += int(valid.sum())
        rec["truncation_round_simulations"].append(int(theta.shape[0]))
        rec["truncation_round_valid_fractions"].append(float(valid.mean()))
        rec["truncation_round_acceptance"].append(float(proposal.info["acceptance"]))
        rec["truncation_round_box_mass"].append(float(proposal.info["box_mass"]))
        rec["truncation_round_in_support"].append(float(proposal.info["posterior_in_support_fraction"]))
        rec["truncation_round_fingerprints"].append(proposal.fingerprint)
    rec.update({"n_truncation_simulations": n_sims, "n_truncation_training_simulations": n_keep, "truncation_simulation_wall_time_s": t_sim,
                "truncation_observation": [float(v) for v in x_o]})
    return posterior, rec, totals


def _sequential_rounds(problem, settings, seed, progress, replacement, path, inference, posterior, bank_kw, train_kw):
    """The APT rounds of the ``sequential`` setting (module docstring), inside the caller's seeded
    torch RNG. Returns (final posterior, record, invalid counts of the round banks)."""
    import torch

    from ._truncation import PosteriorProposal

    seq = check_sequential_declaration(settings["sequential"])
    x_o = handle_invalid(problem.observed_features()[None], replacement)[0][0]
    key = estimator_key(problem, settings, seed)
    rec: dict[str, Any] = {"amortised": 0, "sequential_rounds": seq["rounds"], "sequential_num_atoms": seq["num_atoms"], "sequential_round_simulations": [],
                           "sequential_round_valid_fractions": [], "sequential_round_epochs": [], "sequential_round_fingerprints": []}
    totals = _new_counts(len(problem.feature_names()))
    t_sim = 0.0
    n_sims = n_keep = 0
    for r in range(1, seq["rounds"] + 1):
        proposal = PosteriorProposal(copy.deepcopy(posterior), x_o, key=key, round=r)
        t = time.perf_counter()
        theta, x = simulate_bank(problem, seq["simulations"], seed=seed, stream=f"sequential-{r}", prior=proposal, **bank_kw)
        t_sim += time.perf_counter() - t
        x, valid, counts = handle_invalid(x, replacement)
        _add_counts(totals, counts)
        if valid.sum() < 2:
            raise RuntimeError(f"sequential round {r}: {int(valid.sum())} of {theta.shape[0]} simulations from the posterior are valid; cannot train (fix: more simulations in the first round or per round)")
        inference.append_simulations(torch.as_tensor(theta[valid], dtype=torch.float32), torch.as_tensor(x[valid], dtype=torch.float32), proposal=proposal.posterior)
        posterior, epochs = _train_round(inference, path, r, lambda: inference.train(num_atoms=int(seq["num_atoms"]), **train_kw))
        rec["sequential_round_epochs"].append(epochs)
        n_sims += int(theta.shape[0])
        n_keep += int(valid.sum())
        rec["sequential_round_simulations"].append(int(theta.shape[0]))
        rec["sequential_round_valid_fractions"].append(float(valid.mean()))
        rec["sequential_round_fingerprints"].append(proposal.fingerprint)
        if progress:
            print(f"sequential round {r}/{seq['rounds']}: {int(valid.sum())} of {theta.shape[0]} valid ({valid.mean():.1%})", flush=True)
    rec.update({"n_sequential_simulations": n_sims, "n_sequential_training_simulations": n_keep, "sequential_simulation_wall_time_s": t_sim,
                "sequential_observation": [float(v) for v in x_o]})
    return posterior, rec, totals


def run(problem: Problem, *, settings: Mapping[str, Any] | None = None, seed: int = 0, progress: bool = True) -> xr.DataTree:
    """NPE posterior at the problem's observation, with its calibration and predictive checks.

    The trained estimator is looked up in the cache by :func:`estimator_key`; if it is there
    (same entry, simulator configuration, training settings, ``invalid`` rule and seed), it is
    reused without simulating or training again (``reused_estimator = 1`` in the attrs, with the
    original training record); otherwise the bank is simulated, the estimator trained and saved.

    Invalid simulations are handled by the ``invalid`` setting, identically for training and
    calibration (module docstring); counts are in the attrs (``n_invalid_simulations``,
    ``n_replaced_simulations``, ``n_excluded_simulations``, per-feature ``invalid_feature_counts``
    and ``replaced_feature_counts``; older cached records have only the first and the per-feature
    invalid counts) and in the ``calibration`` group's attrs for the SBC set.

    With ``restrict`` (module docstring, "Restricted prior"), the bank is drawn from the restricted
    prior, which is the NPE prior, so the posterior is restricted to the accepted region and
    conditional on valid features; SBC draws from the same restricted prior; the restriction's
    figures are in the attrs (``restriction_*``, ``n_bank_simulations``, ``bank_valid_fraction``)
    and ``n_simulations`` counts pilot and bank simulations.

    Groups besides ``posterior``/``observed_data``: ``calibration`` (SBC, :func:`_sbc`) and,
    unless ``ppc_draws`` and ``ppc_noise_seeds`` are both 0, ``posterior_predictive``
    (:func:`posterior_predictive_features`). ``n_simulations`` stays the training budget; the
    predictive simulations run by this call are counted in ``n_ppc_simulations``.

    Raises
    ------
    ValueError
        Unknown settings, invalid setting values (see :func:`check_invalid_declaration`), or an
        observation with non-finite features that the ``invalid`` rule does not replace.
    """
    import torch

    unknown = set(dict(settings or {})) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown npe setting(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    settings = {**DEFAULTS, **dict(settings or {})}
    replacement = _validate_settings(problem, settings)
    t0 = time.perf_counter()
    x_o_raw = problem.observed_features()
    x_o = handle_invalid(x_o_raw[None], replacement)[0][0]
    if not np.all(np.isfinite(x_o)):
        bad = [n for n, v in zip(problem.feature_names(), x_o) if not np.isfinite(v)]
        raise ValueError(
            f"the observed features {bad} are NaN/inf; NPE needs a finite observation "
            "(fix: invalid = 'replace' with invalid_values for these features, or an observation where they exist)"
        )

    path = cache_dir() / "npe" / f"{problem.entry_id}-{estimator_key(problem, settings, seed)}.pt"
    record_path = path.with_suffix(".json")
    if path.exists() and record_path.exists():
        posterior = load_posterior(path)
        record = {**json.loads(record_path.read_text()), "reused_estimator": 1}
    else:
        posterior, record = _train(problem, settings, seed, progress, replacement, path)
        _save_estimator(posterior, record, path)
        record["reused_estimator"] = 0
    t_sample = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) + 1)
        draws = posterior.sample((int(settings["num_draws"]),), x=torch.as_tensor(x_o, dtype=torch.float32), show_progress_bars=False)
        draws = draws.to(torch.float64).numpy()
        sbc_prior = None
        if settings["restrict"] is not None:
            sbc_prior = posterior.prior  # the restricted prior the estimator was trained with
            if not isinstance(getattr(sbc_prior, "fingerprint", None), str):
                raise RuntimeError(f"the cached estimator {path} was not trained with a restricted prior; delete it and rerun")
        if settings["sequential"] is not None:
            calibration = xr.Dataset(attrs={"n_sbc": 0, "sbc_skipped": "sequential (APT) rounds: the estimator is fitted to this observation, not amortised over the prior, so SBC over the prior does not apply"})
        elif settings["truncate"] is not None:
            calibration = xr.Dataset(attrs={"n_sbc": 0, "sbc_skipped": "truncated sequential rounds: the estimator is fitted to this observation, not amortised over the prior, so SBC over the prior does not apply"})
        else:
            calibration = _sbc(problem, posterior, settings, seed, progress, replacement, prior=sbc_prior)
    record["sampling_wall_time_s"] = time.perf_counter() - t_sample
    groups = {"calibration": calibration}
    t_ppc = time.perf_counter()
    n_before = problem.counter.simulations
    ppc = posterior_predictive_features(
        problem,
        draws,
        seed=seed,
        n_draws=int(settings["ppc_draws"]),
        n_noise_seeds=int(settings["ppc_noise_seeds"]),
        chunk_size=int(settings["chunk_size"]),
    )
    if ppc is not None:
        groups["posterior_predictive"] = ppc
    record["n_ppc_simulations"] = int(problem.counter.simulations - n_before)
    record["ppc_wall_time_s"] = time.perf_counter() - t_ppc
    params = problem.unflatten(draws)
    return make_result(
        problem,
        route="npe",
        posterior={k: v[None] for k, v in params.items()},
        settings=settings,
        seed=seed,
        wall_time_s=time.perf_counter() - t0,
        groups=groups,
        attrs={**record, "estimator_path": str(path), "feature_names": problem.feature_names()},
    )


def _sbc(
    problem: Problem, posterior, settings: Mapping[str, Any], seed: int, progress: bool, replacement: np.ndarray | None = None, prior: Any = None
) -> xr.Dataset:
    """Ranks of held-out true parameters among posterior draws (Talts et al. 2018).

    Held-out pairs come from the ``calib`` seed stream (never overlapping the training bank).
    The ``invalid`` rule of training is applied (:func:`handle_invalid` with the same
    ``replacement``): excluded simulations are dropped, replaced values used, and both counted in
    the attrs (``n_invalid``, ``n_replaced``, ``n_excluded``, per-feature counts). The
    coordinate ``bank_row`` gives each kept simulation's row in the ``calib`` bank.

    With a restricted ``prior`` (the estimator's NPE prior), θ are drawn from it (stream
    ``calib-restricted``, bank keyed by its fingerprint) and only valid simulations are ranked:
    the ranks then test the estimator against the distribution it was trained on, p_r(θ)
    P(valid | θ) p(x | θ, valid). The attrs record ``sbc_prior`` (``"prior"`` or
    ``"restricted"``) and, when restricted, ``restriction_fingerprint``.
    """
    import torch

    n = int(settings["sbc_simulations"])
    L = int(settings["sbc_draws"])
    names = problem.flat_names()
    stream = "calib" if prior is None else "calib-restricted"
    if n <= 0:
        return xr.Dataset(attrs={"n_sbc": 0})
    theta, x = simulate_bank(
        problem,
        n,
        seed=seed,
        stream=stream,
        chunk_size=int(settings["chunk_size"]),
        progress=False,
        executor=settings["executor"],
        workers=settings["workers"],
        prior=prior,
    )
    x, valid, counts = handle_invalid(x, replacement)
    attrs = {
        "n_sbc": n,
        "n_posterior_draws": L,
        "invalid_rule": str(settings.get("invalid", "exclude")),
        "n_invalid": counts["n_invalid"],
        "n_replaced": counts["n_replaced"],
        "n_excluded": counts["n_excluded"],
        "invalid_feature_counts": counts["invalid_feature_counts"],
        "replaced_feature_counts": counts["replaced_feature_counts"],
        "stream": stream,
        "sbc_prior": "prior" if prior is None else "restricted",
    }
    if prior is not None:
        attrs["restriction_fingerprint"] = prior.fingerprint
    rows = np.flatnonzero(valid)
    theta, x = theta[valid], x[valid]
    if rows.size == 0:
        return xr.Dataset(attrs=attrs)
    samples = posterior.sample_batched((L,), x=torch.as_tensor(x, dtype=torch.float32), show_progress_bars=False)
    samples = samples.to(torch.float64).numpy()  # (L, n, D)
    ranks = (samples < theta[None]).sum(axis=0)  # (n, D)
    lo, hi = np.quantile(samples, [0.025, 0.975], axis=0)
    inside = (theta >= lo) & (theta <= hi)
    return xr.Dataset(
        {
            "rank": (("sbc_simulation", "parameter"), ranks.astype(np.int64)),
            "theta": (("sbc_simulation", "parameter"), theta),
            "inside_95": (("sbc_simulation", "parameter"), inside.astype(np.int8)),
        },
        coords={"parameter": names, "sbc_simulation": np.arange(theta.shape[0]), "bank_row": ("sbc_simulation", rows.astype(np.int64))},
        attrs=attrs,
    )


def _truth_vector(problem: Problem) -> np.ndarray | None:
    """The flat parameter vector (D,) that simulated the problem's data, when the data recipe
    recorded it (``data_info["theta"]`` of a simulator recipe); else None (real data, user data)."""
    info = problem.data_info or {}
    theta = info.get("theta")
    if info.get("generator") != "simulator" or not isinstance(theta, Mapping):
        return None
    try:
        return problem.flatten({p.name: np.asarray(theta[p.name], dtype=np.float64)[None] for p in problem.parameters})[0]
    except (KeyError, ValueError):
        return None


def _simulate_in_chunks(problem: Problem, theta: np.ndarray, seeds: np.ndarray, chunk_size: int) -> np.ndarray:
    """Features (n, F) of ``theta`` (n, D) with one seed per row, simulated in-process in chunks
    (rows depend only on their θ and seed, so the chunking does not change the result)."""
    parts = []
    for a in range(0, theta.shape[0], max(int(chunk_size), 1)):
        b = min(a + int(chunk_size), theta.shape[0])
        x = np.asarray(problem.simulate_features(theta[a:b], seeds[a:b]), dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != b - a:
            raise ValueError(f"simulate_features returned shape {x.shape}; expected ({b - a}, n_features)")
        parts.append(x)
    return np.concatenate(parts, axis=0)


def posterior_predictive_features(
    problem: Problem,
    draws: np.ndarray,
    *,
    seed: int,
    n_draws: int = 100,
    n_noise_seeds: int = 20,
    chunk_size: int = 1000,
) -> xr.Dataset | None:
    """Posterior predictive simulations of the summary features (the ``posterior_predictive`` group).

    Route-agnostic: ``draws`` (N, D) are flat posterior draws of any route.

    * The first ``n_draws`` draws (at most N; NPE draws are independent, so they are a random
      subset) are simulated once each with simulation seeds ``seeds_for(seed, n, stream="ppc")``:
      ``features`` (chain = 1, draw, feature) and the parameter values used, ``theta``
      (chain, draw, parameter). The ``draw`` coordinate is the draw's index in the posterior.
    * The posterior median (per-parameter median of all N draws), ``median_draw_theta``
      (parameter), is simulated under ``n_noise_seeds`` noise seeds
      ``seeds_for(seed, m, stream="ppc-median")``: ``median_draw_features`` (noise_seed, feature).
    * When the data were simulated by the entry at a recorded θ (a simulator data recipe), that
      truth is simulated under the *same* noise seeds (common random numbers):
      ``truth_theta`` and ``truth_features`` (noise_seed, feature); their spread is the noise SD at
      the truth that the issue's acceptance test divides by.
    * ``observed_features`` (feature): the raw observation the simulations are compared with.

    Simulated features are stored raw: non-finite values are kept (and counted in the attrs
    ``n_invalid_draws``, ``n_invalid_median_draw``, ``n_invalid_truth``: simulations with any
    non-finite feature), never replaced or dropped; :func:`mechzoo.diagnose` excludes them per
    feature and reports the counts. Simulations run in-process (``problem.simulate_features``) in
    chunks of ``chunk_size``. Returns None when ``n_draws`` and ``n_noise_seeds`` are both 0.

    References: Gelman, Meng & Stern (1996), Statistica Sinica 6:733; Gelman et al. (2013),
    *Bayesian Data Analysis*, 3rd ed., ch. 6.
    """
    draws = np.atleast_2d(np.asarray(draws, dtype=np.float64))
    n = min(int(n_draws), draws.shape[0])
    m = int(n_noise_seeds)
    if n <= 0 and m <= 0:
        return None
    if m == 1:
        raise ValueError("n_noise_seeds must be 0 or >= 2 (an SD needs two simulations)")
    feature_names = problem.feature_names()
    x_o = problem.observed_features()
    data_vars: dict[str, Any] = {"observed_features": (("feature",), x_o)}
    coords: dict[str, Any] = {"feature": feature_names, "parameter": problem.flat_names()}
    attrs: dict[str, Any] = {"n_ppc_draws": n, "n_noise_seeds": m, "stream": "ppc", "median_stream": "ppc-median"}
    if n > 0:
        theta = draws[:n]
        x = _simulate_in_chunks(problem, theta, seeds_for(seed, n, stream="ppc"), chunk_size)
        data_vars["features"] = (("chain", "draw", "feature"), x[None])
        data_vars["theta"] = (("chain", "draw", "parameter"), theta[None])
        coords.update(chain=[0], draw=np.arange(n))
        attrs["n_invalid_draws"] = int((~np.isfinite(x)).any(axis=1).sum())
    if m > 0:
        noise_seeds = seeds_for(seed, m, stream="ppc-median")
        median = np.median(draws, axis=0)
        xm = _simulate_in_chunks(problem, np.repeat(median[None], m, axis=0), noise_seeds, chunk_size)
        data_vars["median_draw_theta"] = (("parameter",), median)
        data_vars["median_draw_features"] = (("noise_seed", "feature"), xm)
        coords["noise_seed"] = np.arange(m)
        attrs["n_invalid_median_draw"] = int((~np.isfinite(xm)).any(axis=1).sum())
        truth = _truth_vector(problem)
        if truth is not None:
            xt = _simulate_in_chunks(problem, np.repeat(truth[None], m, axis=0), noise_seeds, chunk_size)
            data_vars["truth_theta"] = (("parameter",), truth)
            data_vars["truth_features"] = (("noise_seed", "feature"), xt)
            attrs["n_invalid_truth"] = int((~np.isfinite(xt)).any(axis=1).sum())
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _save_estimator(posterior, record: Mapping[str, Any], path: Path) -> None:
    """Save the trained posterior (pickled, CPU) and its training record atomically."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(posterior, tmp)
    os.replace(tmp, path)
    tmp_json = path.with_suffix(".json.tmp")
    tmp_json.write_text(json.dumps(record))
    os.replace(tmp_json, path.with_suffix(".json"))


def load_posterior(path: str | os.PathLike):
    """Reload a trained NPE posterior on the CPU, whatever device trained it."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)
