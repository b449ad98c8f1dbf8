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
# # 06 · Backbones and label fractions: supplementary Table 8
#
# CAST's student (DINOv2-S, 52M parameters) against the Guided Distillation baseline with a ResNet-50,
# DINOv2-B or DINOv2-L backbone, at 5, 10 and 30% of the Cityscapes train labels (splits of notebook 01).
# Every CAST cell is the whole pipeline (teacher adaptation, knowledge transfer, refinement) trained at that
# fraction, since $\mathcal{D}_l$ and $\mathcal{D}_u$ change with it; so is every Guided Distillation cell (its
# stage-1 teacher on the labels, then guided burn-in and EMA distillation). CAST's cells are the refined student
# $\theta_s^+$, as the paper's Table 8 (its 33.9 at 10 % is main Table 1's "CAST (student refinement)").
#
# The table gives each cell beside the paper's; the figure draws maskAP against the labelled fraction.
#
# **Data and what the numbers mean.** `smoke`: 40 train and 10 val synthetic images (128x256) in the Cityscapes
# format and runs of a few iterations: maskAP is 0 by design (the table shows the format and that every path runs).
# `mini`: 300 synthetic images, stand-in backbones: small numbers (maskAP about 10-15), read for orderings, not for
# the paper's values. `paper`: real Cityscapes and the hub weights: the paper's numbers.

# %% tags=["parameters"]
profile = "smoke"  # smoke | mini | paper
dataset = "cityscapes"  # Table 8 is Cityscapes only
data_root = ""  # a real dataset root, or empty for the synthetic set of the profile
seeds = []  # the seeds each cell averages over; empty: the profile's seeds
tables = [8]  # build Table 8 when 8 is listed
runs_dir = ""  # where runs live; empty: the profile's runs_dir
overrides = []  # more config overrides, as `castlib --set` takes them (the tests: a smaller synthetic set)
tables_dir = "results/tables"  # relative: from the repository root
figures_dir = "results/figures"
output_dir = "results/notebooks/06_backbones_and_label_fractions"
interactive = True  # show the widgets (headless runs set False)

# %%
from castlib.notebooks import notebook_config, notebook_folder, record
from castlib.report.paper_tables import build_table, data_notes
from castlib.report.plots import label_fraction_figure, save_figure
from castlib.report.tables import publish_table

cfg = notebook_config(profile, dataset, seeds, runs_dir, data_root, overrides)
# folders from the repository root, whatever the kernel's working directory (JupyterLab starts it in notebooks/)
tables_dir, figures_dir = notebook_folder(tables_dir), notebook_folder(figures_dir)
output_dir = notebook_folder(output_dir)
for line in data_notes(cfg):
    print(line)

# %%
if 8 in tables:
    table = build_table(cfg, 8)
    publish_table(table, tables_dir)
    shown = table[table.attrs["display_columns"]]
    record(output_dir, "table8", shown.to_dict("records"))
    save_figure(label_fraction_figure(table), figures_dir / "table8_label_fractions.png")
else:
    shown = "Table 8 not requested (tables parameter)"
shown
