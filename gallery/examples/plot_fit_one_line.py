"""
Fit an entry in one line
========================

``mechzoo.fit`` takes an entry id, regenerates the entry's default data from its recipe, and
returns the posterior as an ArviZ ``DataTree`` — whichever route produced it. Here NUTS on the
linear-Gaussian fixture, whose exact posterior is known.
"""

import matplotlib.pyplot as plt

import mechzoo

result = mechzoo.fit("linear-gaussian", method="nuts", draws=300, tune=300, progress=False)
print(result["posterior"])

# %%
# The draws of every parameter live in the ``posterior`` group, with the dims declared in the
# entry (``slopes`` has dim ``covariate``). The reference values the data were simulated from are
# in the entry.
entry = mechzoo.load("linear-gaussian")
ref = entry.reference_values()
post = result["posterior"]
fig, axes = plt.subplots(1, 3, figsize=(9, 2.6), layout="constrained")
panels = [("intercept", post["intercept"], ref["intercept"])] + [
    (f"slopes[{c}]", post["slopes"].sel(covariate=c), ref["slopes"][i]) for i, c in enumerate(entry.dims["covariate"])
]
for ax, (name, da, true) in zip(axes, panels):
    ax.hist(da.values.ravel(), bins=30, density=True, color="C0", alpha=0.7)
    ax.axvline(true, color="C3", ls="--", label="reference")
    ax.set_xlabel(f"{name} [1]")
    ax.set_ylabel("density [1/unit]")
axes[0].legend()
fig.suptitle("NUTS posterior marginals (histograms) and reference values (red dashed)", fontsize=9)
