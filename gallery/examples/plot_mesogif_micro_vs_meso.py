"""
mesoGIF: microscopic network vs mesoscopic model
================================================

The ``mesogif-2pop`` entry can generate data two ways from the same parameters and the same
frozen sine input (specs/mesogif.md §2, §3, §6.2): the microscopic network of 547 GIF neurons
(brian2, ``generator = "micro"``) and the mesoscopic population model that the likelihood is
built on. Their population rates should agree to a few per cent (Appendix B item 3).
"""

import os

import matplotlib.pyplot as plt
import numpy as np

import mechzoo

duration = 2.0 if os.environ.get("MECHZOO_GALLERY_FAST") == "1" else 10.0
meso = mechzoo.simulate("mesogif-2pop", seed=3, duration_s=duration)
micro = mechzoo.simulate("mesogif-2pop", seed=3, duration_s=duration, generator="micro", codegen="numpy")

# %%
# Population activity A = n / (N dt) in 10-ms bins, and mean rates after the first 0.5 s.
N = np.array([438, 109])
fig, axes = plt.subplots(2, 1, figsize=(8, 4.5), sharex=True, layout="constrained")
for ax, pop, n_pop in zip(axes, ["E", "I"], N):
    for ds, label in [(micro, "microscopic (brian2)"), (meso, "mesoscopic")]:
        counts = ds["counts"].sel(population=pop).isel(simulation=0).values
        binned = counts[: counts.size // 10 * 10].reshape(-1, 10).sum(1) / (n_pop * 0.010)
        t = np.arange(binned.size) * 0.010
        rate = counts[500:].mean() / (n_pop * 0.001)
        ax.plot(t, binned, lw=0.8, label=f"{label}: {rate:.2f} Hz")
    ax.set_ylabel(f"A_{pop} [Hz]")
    ax.legend(fontsize=8, loc="upper right")
axes[-1].set_xlabel("time [s]")
fig.suptitle("Population activity of the micro network and the meso model, same input", fontsize=9)
