"""
Read the diagnostics
====================

``mechzoo.diagnose`` gives one table for any route: R-hat and ESS for MCMC, simulation-based
calibration for NPE, restart agreement for MAP. Route-level figures (divergences, cost) are in
``table.attrs``.
"""

import matplotlib.pyplot as plt

import mechzoo

result = mechzoo.fit("linear-gaussian", method="nuts", draws=300, tune=300, progress=False)
table = mechzoo.diagnose(result)
print(table.round(3).to_string())
print({k: table.attrs[k] for k in ("route", "wall_time_s", "n_gradient_evaluations", "divergences")})

# %%
# A converged run has R-hat close to 1 (below 1.01) and a bulk ESS of at least a few hundred per
# parameter.
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 2.6), layout="constrained")
ax1.barh(table.index, table["r_hat"], color="C0")
ax1.axvline(1.01, color="C3", ls="--", label="1.01")
ax1.set_xlim(0.99, max(1.02, table["r_hat"].max() + 0.005))
ax1.set_xlabel("split R-hat [1]")
ax1.set_ylabel("parameter")
ax1.legend()
ax2.barh(table.index, table["ess_bulk"], color="C2")
ax2.set_xlabel("bulk ESS [draws]")
fig.suptitle("Convergence diagnostics of the NUTS run: R-hat (left) and bulk ESS (right)", fontsize=9)
