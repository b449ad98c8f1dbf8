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
# # 05 · Ablations: supplementary Tables 3-7
#
# Each table asks the stages for the runs it needs, once per seed of `seeds`; the registry trains only what
# is missing, so the CAST pipeline is trained once and shared by every table, and Tables 4, 5 and 7 add
# student runs only (they vary the student's $\mathcal{L}_{pxl}$ and reuse the CAST teacher).
#
# | Table | varies | rows |
# |---|---|---|
# | 3 | teacher adaptation | fine-tuning only; self-training; self-training + $\mathcal{L}_{pxl}$ (CAST) |
# | 4 | contrastive loss | asymmetric InfoNCE; margin hinge $\max(0, m-(s^+-s^-))$ |
# | 5 | debias score | $s^{deb}$; $(s^{deb})^2$; $\sqrt{s^{deb}}$ |
# | 6 | teacher | T1 zero-shot $\theta_T^0$, T2 adapted $\theta_T''$, and the student under each |
# | 7 | negative scope | in-batch; memory bank (10k) |
#
# **Which student.** Tables 4, 5, 6 and 7 report the distilled student $\theta_s^*$ (after knowledge transfer,
# before refinement), as the paper does: its 32.2 there is main Table 1's "CAST (knowledge transfer)" and main
# Table 2's student "before refinement"; Table 3 reports the refined $\theta_s^+$, the paper's 33.9.
#
# Each cell gives the reproduced mean $\pm$ std over the seeds that have the run and that cell's own seed count
# `n` (Table 6's T1 is one evaluation: its weights do not depend on the seed), with the paper's value beside it;
# `tableN.md` adds the notes, the provenance (data, machines, commits) and every run behind each row. The last
# section reads which of the paper's orderings the runs show (`orderings.md`, generated, never typed by hand).
#
# **Data and what the numbers mean.** `smoke`: 40 train and 10 val synthetic images (128x256) in the Cityscapes
# format and runs of a few iterations: maskAP is 0 by design (the tables show the format and that every path runs).
# `mini`: 300 synthetic images, models from source-pretrained stand-ins: real learning, small numbers (maskAP about
# 10-15), read for orderings, not for the paper's values. `paper`: real Cityscapes or ADE20K and the hub weights:
# the paper's numbers.

# %% tags=["parameters"]
profile = "smoke"  # smoke | mini | paper
dataset = "cityscapes"  # cityscapes | ade20k
data_root = ""  # a real dataset root, or empty for the synthetic set of the profile
seeds = []  # the seeds each table averages over; empty: the profile's seeds
tables = [3, 4, 5, 6, 7]  # the tables to build (others are skipped)
runs_dir = ""  # where runs live; empty: the profile's runs_dir
overrides = []  # more config overrides, as `castlib --set` takes them (the tests: a smaller synthetic set)
tables_dir = "results/tables"  # relative: from the repository root
output_dir = "results/notebooks/05_ablation_tables"
interactive = True  # show the widgets (headless runs set False)

# %%
import pandas as pd
from IPython.display import Markdown, display

from castlib.notebooks import notebook_config, notebook_folder, record
from castlib.report.orderings import write_orderings
from castlib.report.paper_tables import build_table, data_notes, orderings_header
from castlib.report.tables import publish_table

cfg = notebook_config(profile, dataset, seeds, runs_dir, data_root, overrides)
# folders from the repository root, whatever the kernel's working directory (JupyterLab starts it in notebooks/)
tables_dir, output_dir = notebook_folder(tables_dir), notebook_folder(output_dir)
chosen = [n for n in (3, 4, 5, 6, 7) if n in tables]
print(f"profile {cfg.profile}, tables {chosen}, seeds {list(cfg.seeds)}")
for line in data_notes(cfg):
    print(line)


# %%
def show(number: int) -> None:
    """Build, write, record and show Table ``number``."""
    table = build_table(cfg, number)
    publish_table(table, tables_dir)
    shown = table[table.attrs["display_columns"]]
    record(output_dir, f"table{number}", shown.to_dict("records"))
    display(Markdown(f"**{table.attrs['caption']}**"), shown)
    display(Markdown("\n".join(f"- {note}" for note in table.attrs["notes"])))


# %% [markdown]
# ## Table 3: teacher adaptation
# Teacher AP and student AP per variant; "delta vs SOTA" is the student AP minus the kit's own Guided
# Distillation (ResNet-50) AP at the same labels and seed (`castlib.baselines.guided_distillation`).

# %%
if 3 in chosen:
    show(3)

# %% [markdown]
# ## Table 4: asymmetric InfoNCE vs margin hinge, with the training-time ratio (E.2: 1.6x)

# %%
if 4 in chosen:
    show(4)

# %% [markdown]
# ## Table 5: debias score $s^{deb}$, squared, square root

# %%
if 5 in chosen:
    show(5)

# %% [markdown]
# ## Table 6: which teacher: zero-shot T1 or adapted T2

# %%
if 6 in chosen:
    show(6)

# %% [markdown]
# ## Table 7: in-batch negatives vs a memory bank, with the training-time ratio (E.4: 2.2x)

# %%
if 7 in chosen:
    show(7)

# %% [markdown]
# ## Which of the paper's orderings the runs show
# Every pair of rows the paper orders, read from the per-seed values of the tables in `tables_dir` and paired by
# seed: "holds" when every seed agrees and the mean difference exceeds its paired standard error, "not seen" when
# a seed disagrees, "one seed" when only one paired difference exists (`castlib.report.orderings`).

# %%
written = write_orderings(tables_dir, orderings_header(cfg))
if written:
    orderings = pd.read_csv(written[0], comment="#")
    record(output_dir, "orderings", orderings[["table", "claim", "verdict"]].to_dict("records"))
    display(orderings[["table", "metric", "claim", "mean a", "mean b", "paired differences", "seeds agreeing",
                       "verdict"]])
else:
    print(f"no table in {tables_dir} yet")

# %% [markdown]
# ## Try a variant
# Choose the student's settings and press the button: the variant trains through the registry (a repeat
# is instant; the button reads "training..." until it is done) and its row joins the table below the button: the
# changed settings, the AP and AP50 of the distilled student $\theta_s^*$ (what Tables 4-7 report) and of the
# refined $\theta_s^+$ (Tables 3 and 8), and the run ids. The same choices again keep one row.

# %%
from castlib.report.widgets import variant_panel

variant_panel(cfg, view="row") if interactive else print("interactive=False: widget not shown")
