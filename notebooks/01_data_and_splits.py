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
# # 01 · Data and splits
#
# CAST trains on a small labelled set $\mathcal{D}_l$ and a large unlabelled set $\mathcal{D}_u$
# (supplementary Table 1: Cityscapes 298 / 2677 of 2975 train images, ADE20K 1000 / 2537).
# This notebook makes the dataset of a profile ready, writes its split files under `data_splits/`,
# and shows what the training loop will see: instances, and the weak and strong views whose
# pixels correspond one to one (the positive pairs of $\mathcal{L}_{pxl}$).
#
# On the `smoke` and `mini` profiles the data are synthetic, drawn by `castlib.data.synthetic`
# in the real on-disk formats and read by the same loaders as the real datasets.

# %% tags=["parameters"]
profile = "smoke"  # smoke | mini | paper
dataset = "cityscapes"  # cityscapes | ade20k
data_root = ""  # a real dataset root, or empty for the synthetic set of the profile
seed = 0  # augmentation seed of the examples shown
output_dir = "results/notebooks/01_data_and_splits"
interactive = True  # show the widgets (headless runs set False)

# %%
from pathlib import Path

import torch

from castlib.config import load_config
from castlib.data import build_dataset, labelled_dataset, make_splits, prepare_data
from castlib.report.plots import save_figure, show_samples, show_views
from castlib.report.tables import class_statistics, split_table, write_table

overrides = [f"data.dataset={dataset}"] + ([f"data.root={data_root}"] if data_root else [])
cfg = load_config(profile, overrides)
out = Path(output_dir)
root = prepare_data(cfg)
split_paths = make_splits(cfg)
print(f"dataset root: {root}")

# %% [markdown]
# ## Splits
# Cityscapes: a uniform draw of a label fraction of the sorted train ids. ADE20K: a class-stratified
# subset (each image is stratified by the rarest category it contains). See `data_splits/README.md`.

# %%
train = build_dataset(cfg, "train")
splits = split_table(cfg, len(train))
write_table(splits, out / "splits")
splits

# %% [markdown]
# ## What is in the images
# Many instances per image, same-class instances touching and occluding each other, and a long
# tail of rare classes: the regime where separating adjacent instances is hard.

# %%
stats = class_statistics(train)
write_table(stats, out / "class_statistics")
stats

# %%
fig = show_samples([train[i] for i in range(4)], train.classes.names, data=cfg)
save_figure(fig, out / "samples.png")

# %% [markdown]
# ## Weak and strong views
# The weak view is geometric (random resize, crop, flip) on image and masks together; the strong
# view adds photometric transforms only, so pixel $p$ is the same scene point in both.

# %%
torch.manual_seed(seed)
views = labelled_dataset(cfg)
fig = show_views(views[0], data=cfg)
save_figure(fig, out / "views.png")

# %% [markdown]
# ## Browse
# A slider over the training images (in Jupyter; headless runs skip the widget).

# %%
from castlib.report.widgets import sample_browser

sample_browser(train, data=cfg) if interactive else print("interactive=False: widget not shown")
