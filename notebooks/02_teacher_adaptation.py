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
# # 02 · Teacher adaptation
#
# CAST's teacher is a vision foundation model (Grounding DINO boxes prompting SAM2 masks). Before it
# teaches, it is adapted to the target domain in two steps (spec 4.2), both minimising the unified objective
#
# $$\mathcal{J}(\theta;\mathcal{D}_l,\mathcal{D}_u;\lambda_{semi},\lambda_{pxl})=\mathcal{L}_{sup}(\mathcal{D}_l)
# +\lambda_{semi}\,\mathcal{L}_{semi}(\mathcal{D}_u)+\lambda_{pxl}\,\mathcal{L}_{pxl}(\mathcal{D}_l\cup\mathcal{D}_u)$$
#
# - **Step A**, from the pretrained weights $\theta_T^0$, on labels alone:
#   $\theta_T'=\arg\min_\theta \mathcal{J}(\theta;\mathcal{D}_l,\emptyset;0,\lambda_{pxl})$.
# - **Pseudo-labels** $\hat y^u_j=f_{\theta_T'}(x^u_j)$ on $\mathcal{D}_u$ (boxes above
#   the threshold, at most 100 per image).
# - **Step B**, *re-initialised from* $\theta_T^0$, on both sets:
#   $\theta_T''=\arg\min_\theta \mathcal{J}(\theta;\mathcal{D}_l,\mathcal{D}_u;1,\lambda_{pxl})$.
#
# The frozen $\theta_T''$ then labels $\mathcal{D}_u$ for the student (notebook 03). Every call below
# returns a run of the registry (`results/runs/<id>/`): it is trained once and reused afterwards. The figures show
# each step's loss curves and the pseudo-labels beside the ground truth; the last table, each step's maskAP.
#
# **Data and what the numbers mean.** `smoke`: 40 train and 10 val synthetic images (128x256) in the Cityscapes
# format, and a tiny teacher that starts from a stand-in (`model.stand_in`: pretrained 10 iterations on a
# source-domain synthetic set, in place of Grounding DINO's and SAM2's hub weights) and trains a few iterations:
# maskAP is 0 by design, the numbers show the format and that every step runs. `mini`: 300 synthetic images and a
# stand-in pretrained 10k iterations: real learning, small numbers, read for orderings. `paper`: real Cityscapes or
# ADE20K and the hub weights: supplementary Table 6's T1 and T2.

# %% tags=["parameters"]
profile = "smoke"  # smoke | mini | paper
dataset = "cityscapes"  # cityscapes | ade20k
data_root = ""  # a real dataset root, or empty for the synthetic set of the profile
seeds = []  # seeds of the tables; this notebook trains the profile's `seed` (empty: the profile's seeds)
runs_dir = ""  # where runs live; empty: the profile's runs_dir
overrides = []  # more config overrides, as `castlib --set` takes them (the tests: a smaller synthetic set)
figures_dir = "results/figures"  # relative: from the repository root
output_dir = "results/notebooks/02_teacher_adaptation"
interactive = True  # show the widgets (headless runs set False)

# %%
import pandas as pd

from castlib.engine import stages as S
from castlib.notebooks import notebook_config, notebook_folder, record
from castlib.report.plots import pseudo_label_examples, pseudo_label_figure, read_log, save_figure, training_curves

cfg = notebook_config(profile, dataset, seeds, runs_dir, data_root, overrides)
# folders from the repository root, whatever the kernel's working directory (JupyterLab starts it in notebooks/)
figures, output_dir = notebook_folder(figures_dir), notebook_folder(output_dir)

# %% [markdown]
# ## $\theta_T^0$: the teacher before adaptation
# Evaluated zero-shot on the validation set: supplementary Table 6's "Teacher T1".

# %%
t0 = S.teacher_init(cfg)
record(output_dir, "teacher_init_ap", t0.metrics["ap"])
print(f"theta_T^0: run {t0.id}, AP {t0.metrics['ap']:.2f}")

# %% [markdown]
# ## Step A: $\mathcal{L}_{sup}+\lambda_{pxl}\mathcal{L}_{pxl}$ on $\mathcal{D}_l$
# The curves show every term of $\mathcal{J}$ from the run's `log.csv`
# ($\mathcal{L}_{semi}$ is off: $\lambda_{semi}=0$).

# %%
t_a = S.teacher_finetune(cfg, t0)
record(output_dir, "teacher_finetune_ap", t_a.metrics["ap"])
curves_a = save_figure(training_curves(read_log(t_a), "teacher step A"), figures / "teacher_step_a_curves.png")

# %% [markdown]
# ## Step B: pseudo-labels of $\theta_T'$, then $\mathcal{J}(\theta;\mathcal{D}_l,\mathcal{D}_u;1,\lambda_{pxl})$
# Re-initialised from $\theta_T^0$, with $\theta_T'$'s pseudo-labels on $\mathcal{D}_u$.

# %%
labels_a = S.pseudo_labels(cfg, t_a)
t_b = S.teacher_self_training(cfg, t0, labels_a)
record(output_dir, "teacher_self_training_ap", t_b.metrics["ap"])
curves_b = save_figure(training_curves(read_log(t_b), "teacher step B"), figures / "teacher_step_b_curves.png")

# %% [markdown]
# ## The pseudo-labels the student learns from
# The adapted teacher $\theta_T''$ labels $\mathcal{D}_u$; beside each unlabelled image, its ground truth
# (never used in training).

# %%
labels = S.pseudo_labels(cfg, t_b)
record(output_dir, "pseudo_instances_per_image", labels.metrics["instances_per_image"])
record(output_dir, "runs", {"teacher_init": t0.id, "teacher_finetune": t_a.id, "teacher_self_training": t_b.id,
                            "pseudo_labels": labels.id})
labels_png = save_figure(pseudo_label_figure(*pseudo_label_examples(cfg, labels), data=cfg),
                         figures / "teacher_pseudo_labels.png")

# %%
steps = pd.DataFrame([{"step": name, "run": run.id, "AP": run.metrics["ap"], "AP50": run.metrics["ap50"]}
                      for name, run in [("theta_T^0 (zero-shot)", t0), ("theta_T' (step A)", t_a),
                                        ("theta_T'' (step B)", t_b)]])
steps
