"""
Hodgkin–Huxley: fit an Allen cell by NPE
========================================

The ``hh-pospischil`` entry ships the published 7-feature vectors of ten Allen Cell Types
recordings (specs/simulator-models.md §1.7). Each named observation carries its own stimulus
protocol (step amplitude, soma area, V0), so the simulator used for training is that cell's.
The budget here is small (the gallery's fast build); the eLife fits used ≥ 100,000 simulations.
"""

import os

import matplotlib.pyplot as plt
import numpy as np

import mechzoo
from mechzoo.inference.result import posterior_draws_flat

fast = os.environ.get("MECHZOO_GALLERY_FAST") == "1"
result = mechzoo.fit(
    "hh-pospischil",
    "allen-518290966",
    method="npe",
    num_simulations=300 if fast else 5000,
    max_num_epochs=30 if fast else 500,
    sbc_simulations=0,
    num_draws=1000,
    progress=False,
)
print(mechzoo.diagnose(result)[["mean", "sd"]])

# %%
# Posterior marginals of the eight parameters, on their prior boxes.
entry = mechzoo.load("hh-pospischil")
draws, names = posterior_draws_flat(result)
fig, axes = plt.subplots(2, 4, figsize=(10, 4.2), layout="constrained")
for ax, p, j in zip(axes.ravel(), entry.parameters, range(len(names))):
    lo, hi = p.prior["lower"], p.prior["upper"]
    ax.hist(draws[:, j], bins=30, range=(lo, hi), density=True, color="C0", alpha=0.75)
    ax.set_xlabel(f"{p.name} [{p.unit}]")
    ax.set_ylabel("density")
fig.suptitle("NPE posterior for Allen cell 518290966 (histograms over the prior box)", fontsize=9)

# %%
# Posterior predictive spike count: simulate the posterior median under the cell's protocol.
median = {p.name: np.median(draws[:, j]) for j, p in enumerate(entry.parameters)}
ppc = mechzoo.simulate("hh-pospischil", median, n=5, seed=1, data="default", protocol="allen", cell=518290966)
print("observed spike count 12; simulated at the posterior median:", ppc["features"].values[:, 0])
