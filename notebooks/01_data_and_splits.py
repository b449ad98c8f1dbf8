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
# **Data and what the numbers mean.** This notebook trains nothing: its numbers are counts (images per split,
# instances per class) of the profile's set. `smoke`: 40 train and 10 val synthetic images (128x256); `mini`: 300
# and 300; both drawn by `castlib.data.synthetic` in the real on-disk formats and read by the same loaders as the
# real datasets, so the counts are the synthetic set's, not Cityscapes'. `paper`: the real Cityscapes or ADE20K
# under `data_root`, whose splits give supplementary Table 1's counts. Tables and figures go to `output_dir`;
# relative folders are read from the repository root, whatever folder the kernel started in.

# %% tags=["parameters"]
profile = "smoke"  # smoke | mini | paper
dataset = "cityscapes"  # cityscapes | ade20k
data_root = ""  # a real dataset root, or empty for the synthetic set of the profile
seed = 0  # augmentation seed of the examples shown
output_dir = "results/notebooks/01_data_and_splits"  # relative: from the repository root
interactive = True  # show the widgets (headless runs set False)

# %%
import torch

from castlib.config import load_config
from castlib.data import build_dataset, labelled_dataset, make_splits, prepare_data
from castlib.notebooks import notebook_folder
from castlib.report.plots import save_figure, show_samples, show_views
from castlib.report.tables import class_statistics, split_table, write_table

overrides = [f"data.dataset={dataset}"] + ([f"data.root={notebook_folder(data_root)}"] if data_root else [])
cfg = load_config(profile, overrides)
out = notebook_folder(output_dir)  # folders from the repository root, whatever the kernel's working directory
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
samples_png = save_figure(fig, out / "samples.png")

# %% [markdown]
# ## Weak and strong views
# The weak view is geometric (random resize, crop, flip) on image and masks together; the strong
# view adds photometric transforms only, so pixel $p$ is the same scene point in both.

# %%
torch.manual_seed(seed)
views = labelled_dataset(cfg)
fig = show_views(views[0], data=cfg)
views_png = save_figure(fig, out / "views.png")

# %% [markdown]
# ## Browse
# A slider over the training images: moving it draws the chosen image with its instances (in Jupyter; headless
# runs skip the widget).

# %%
from castlib.report.widgets import sample_browser

sample_browser(train, data=cfg) if interactive else print("interactive=False: widget not shown")
