"""
Compare two routes
==================

The linear-Gaussian entry has both a likelihood and a simulator, so the likelihood route (NUTS)
and the simulation route (NPE) can be compared on the same data and prior. ``mechzoo.compare``
returns a tidy table (one row per route and parameter) with the classifier two-sample test
accuracy in ``attrs["c2st"]`` (0.5: indistinguishable).
"""

import matplotlib.pyplot as plt

import mechzoo

nuts = mechzoo.fit("linear-gaussian", method="nuts", draws=200, tune=300, progress=False)
npe = mechzoo.fit(
    "linear-gaussian", method="npe", num_simulations=500, max_num_epochs=60, sbc_simulations=0, num_draws=400, progress=False
)
table = mechzoo.compare([nuts, npe], labels=["nuts", "npe"], c2st_max_samples=300)
print(table[["result", "parameter", "mean", "sd", "mean_diff_z", "interval_overlap_90", "wall_time_s"]].round(3).to_string())
print("C2ST accuracy:", table.attrs["c2st"])

# %%
# Overlaid marginals: NPE with a small simulation budget is wider than the exact posterior that
# NUTS samples.
from mechzoo.inference.result import posterior_draws_flat

(d_nuts, names), (d_npe, _) = posterior_draws_flat(nuts), posterior_draws_flat(npe)
fig, axes = plt.subplots(1, len(names), figsize=(9, 2.6), layout="constrained")
for j, (ax, name) in enumerate(zip(axes, names)):
    ax.hist(d_nuts[:, j], bins=30, density=True, histtype="step", lw=1.5, label="nuts")
    ax.hist(d_npe[:, j], bins=30, density=True, histtype="step", lw=1.5, label="npe")
    ax.set_xlabel(f"{name} [1]")
    ax.set_ylabel("density [1/unit]")
axes[0].legend()
fig.suptitle(f"NUTS vs NPE posterior marginals; C2ST accuracy {list(table.attrs['c2st'].values())[0]:.2f}", fontsize=9)
