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

# %% [markdown]
# # 04 · Student refinement
#
# Pseudo-labels carry the teacher's mistakes. The last stage fine-tunes the distilled student on the
# labels alone, with $\mathcal{L}_{sup}$ only (spec 4.2):
#
# $$\theta_s^\dagger=\arg\min_\theta \mathcal{J}(\theta;\mathcal{D}_l,\emptyset;0,0),\qquad \theta\leftarrow\theta_s^*$$
#
# with the student's optimiser settings (supplementary Table 2) for `train.refinement.iterations`
# (section D: 2k). The refined student $\theta_s^\dagger$ (the tables' $\theta_s^+$) is CAST's final model: the
# paper's 33.9, reported by supplementary Tables 3 and 8; Tables 4-7 report the distilled $\theta_s^*$ (32.2).
# The figure shows the refinement's loss curves; the table, main Table 3 (which stage does what) beside the paper's.
#
# **Data and what the numbers mean.** `smoke`: 40 train and 10 val synthetic images (128x256) in the Cityscapes
# format and runs of a few iterations: maskAP is 0 by design (the tables show the format and that every path runs).
# `mini`: 300 synthetic images, stand-in backbones: small numbers (maskAP about 10-15), read for orderings, not for
# the paper's values. `paper`: real Cityscapes or ADE20K and the hub weights: the paper's numbers.

# %% tags=["parameters"]
profile = "smoke"  # smoke | mini | paper
dataset = "cityscapes"  # cityscapes | ade20k
data_root = ""  # a real dataset root, or empty for the synthetic set of the profile
seeds = []  # seeds of the tables; this notebook trains the profile's `seed` (empty: the profile's seeds)
runs_dir = ""  # where runs live; empty: the profile's runs_dir
overrides = []  # more config overrides, as `castlib --set` takes them (the tests: a smaller synthetic set)
figures_dir = "results/figures"  # relative: from the repository root
tables_dir = "results/tables"
output_dir = "results/notebooks/04_student_refinement"
interactive = True  # show the widgets (headless runs set False)

# %%
import pandas as pd

from castlib.engine import stages as S
from castlib.notebooks import notebook_config, notebook_folder, record
from castlib.report.paper_tables import data_notes, main_table3
from castlib.report.plots import read_log, save_figure, training_curves
from castlib.report.tables import publish_table

cfg = notebook_config(profile, dataset, seeds, runs_dir, data_root, overrides)
# folders from the repository root, whatever the kernel's working directory (JupyterLab starts it in notebooks/)
figures, tables_dir, output_dir = notebook_folder(figures_dir), notebook_folder(tables_dir), notebook_folder(output_dir)
for line in data_notes(cfg):
    print(line)

# %% [markdown]
# ## From $\theta_s^*$ to $\theta_s^\dagger$
# The distilled student is notebook 03's run (reused); refinement has no $\mathcal{L}_{semi}$
# and no $\mathcal{L}_{pxl}$.

# %%
runs = S.cast(cfg)
curves = save_figure(training_curves(read_log(runs["refined"]), "student refinement"),
                     figures / "refinement_curves.png")

# %% [markdown]
# ## Main Table 3: which stage does what
# The training stages of main Table 3, each row a run of the registry: the full pipeline (refined $\theta_s^+$
# under the adapted teacher), no student fine-tuning (the distilled $\theta_s^*$), no teacher adaptation and
# distillation only (the same under the zero-shot teacher $\theta_T^0$), and no distillation: the same student
# from the same pretrained backbone trained on $\mathcal{D}_l$ alone with $\mathcal{L}_{sup}$ for the CAST
# student's whole length (also main Table 2's (a) student). The paper: 33.9, 32.2, 25.7, 23.8, 21.1. On `smoke` every
# cell is 0 by design; `orderings.md` (notebook 05) reads which of these orderings the runs show.

# %%
table = main_table3(cfg)
publish_table(table, tables_dir)
shown = table[table.attrs["display_columns"]]
record(output_dir, "main_table3", shown.to_dict("records"))
stages = pd.DataFrame([{"model": name, "run": runs[key].id, "AP": runs[key].metrics["ap"],
                        "AP50": runs[key].metrics["ap50"]}
                       for name, key in [("teacher theta_T''", "teacher"), ("student theta_s* (distilled)", "student"),
                                         ("student theta_s+ (refined)", "refined")]])
record(output_dir, "stages", stages.to_dict("records"))
shown
