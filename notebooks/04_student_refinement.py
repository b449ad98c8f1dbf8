# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %%

# %% [markdown]
# # 04 · Student refinement
#
# Pseudo-labels carry the teacher's mistakes. The last stage fine-tunes the distilled student on the
# labels alone, with $\mathcal{L}_{sup}$ only (spec 4.2):
#
# $$\theta_s^\dagger=\arg\min_\theta \mathcal{J}(\theta;\mathcal{D}_l,\emptyset;0,0),\qquad \theta\leftarrow\theta_s^*$$
#
# with the student's optimiser settings (supplementary Table 2) for `train.refinement.iterations`
# (section D: 2k). The refined student $\theta_s^\dagger$ is CAST's final model: the student AP of every table.

# %% tags=["parameters"]
profile = "smoke"  # smoke | mini | paper
dataset = "cityscapes"  # cityscapes | ade20k
data_root = ""  # a real dataset root, or empty for the synthetic set of the profile
seeds = []  # seeds of the tables; this notebook trains the profile's `seed` (empty: the profile's seeds)
runs_dir = ""  # where runs live; empty: the profile's runs_dir
overrides = []  # more config overrides, "key=value" (the tests: a smaller synthetic set)
figures_dir = "results/figures"
output_dir = "results/notebooks/04_student_refinement"
interactive = True  # show the widgets (headless runs set False)

# %%
from pathlib import Path

import pandas as pd

from castlib.engine import stages as S
from castlib.notebooks import notebook_config, record
from castlib.report.plots import read_log, save_figure, training_curves

cfg = notebook_config(profile, dataset, seeds, runs_dir, data_root, overrides)
figures = Path(figures_dir)

# %% [markdown]
# ## From $\theta_s^*$ to $\theta_s^\dagger$
# The distilled student is notebook 03's run (reused); refinement has no $\mathcal{L}_{semi}$
# and no $\mathcal{L}_{pxl}$.

# %%
runs = S.cast(cfg)
save_figure(training_curves(read_log(runs["refined"]), "student refinement"), figures / "refinement_curves.png")

# %% [markdown]
# ## Without distillation
# Main Table 3's "No distill. (Sup.)" row: the same student from the same pretrained backbone, trained on
# $\mathcal{D}_l$ alone with $\mathcal{L}_{sup}$ for the CAST student's whole length (knowledge transfer +
# refinement iterations). CAST's refined student should beat it (paper: 33.9 vs 21.1 maskAP).

# %%
runs["supervised"] = S.supervised_student(cfg)
stages = pd.DataFrame([{"model": name, "run": runs[key].id, "AP": runs[key].metrics["ap"],
                        "AP50": runs[key].metrics["ap50"]}
                       for name, key in [("teacher theta_T''", "teacher"), ("student theta_s* (distilled)", "student"),
                                         ("student theta_s+ (refined)", "refined"),
                                         ("student supervised only (no distillation)", "supervised")]])
record(output_dir, "stages", stages.to_dict("records"))
stages
