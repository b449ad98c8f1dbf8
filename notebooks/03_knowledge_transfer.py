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
# # 03 · Knowledge transfer
#
# The frozen adapted teacher $\theta_T''$ labels $\mathcal{D}_u$, and the compact student (DINOv2-S encoder,
# DPT pixel decoder, Mask2Former decoder) learns from ground truth and pseudo-labels together:
#
# $$\theta_s^*=\arg\min_{\theta_s}\mathcal{J}(\theta_s;\mathcal{D}_l,\mathcal{D}_u;\lambda_{semi},\lambda_{pxl})$$
#
# $\mathcal{L}_{pxl}$ is the instance-aware pixel-wise contrastive loss (spec 7.3). The positive of pixel $p$
# is the same pixel in the strong view; $R$ negatives are drawn by the debiased sampler:
#
# $$\mathcal{L}_{pxl}=-\frac{1}{BN}\sum_{b,p}\log\frac{\exp(s^+_{b,p})}{\exp(s^+_{b,p})+\sum_{r=1}^{R}
# \exp(s^-_{b,p,r})}$$
#
# $$q\big((b',q)\mid(b,p)\big)\propto s^{deb}=\max\big(0,1-\langle\tilde y[b,p],\tilde y[b',q]\rangle\big)$$
#
# with $y=[P_m\Vert F_c]$ the pseudo-probability embedding of the model's own detached predictions, so
# pixels likely to lie in *other instances* are drawn as negatives. Proposition 3.1: when a sampled
# negative is a true inter-instance pixel with probability $p>0.5$, each update grows the expected
# margin $\Delta_{emp}$ by $\Theta(p\,\lambda_{pxl})$. The run logs both $\Delta_{emp}$ and the false-negative
# rate $1-p$; below they are compared with uniform negatives (`embedding=uniform`, a run of its own). The figures
# show the student's loss curves and these two diagnostics; the panel at the end trains a variant and draws its own.
#
# **Data and what the numbers mean.** `smoke`: 40 train and 10 val synthetic images (128x256) in the Cityscapes
# format and a tiny student trained a few iterations: maskAP is 0 by design; the margin and false-negative rate are
# measured all the same (the sampler's effect on the FNR shows from the first iterations), the curves are a few
# points long. `mini`: 300 synthetic images, stand-in backbones: real learning, small numbers, read for orderings.
# `paper`: real Cityscapes or ADE20K and the hub weights: the paper's main Fig. 3.

# %% tags=["parameters"]
profile = "smoke"  # smoke | mini | paper
dataset = "cityscapes"  # cityscapes | ade20k
data_root = ""  # a real dataset root, or empty for the synthetic set of the profile
seeds = []  # seeds of the tables (the widget offers them); empty: the profile's seeds
runs_dir = ""  # where runs live; empty: the profile's runs_dir
overrides = []  # more config overrides, as `castlib --set` takes them (the tests: a smaller synthetic set)
figures_dir = "results/figures"  # relative: from the repository root
output_dir = "results/notebooks/03_knowledge_transfer"
interactive = True  # show the widgets (headless runs set False)

# %%
import pandas as pd

from castlib.engine import stages as S
from castlib.notebooks import notebook_config, notebook_folder, record
from castlib.report.paper_tables import with_student_contrastive
from castlib.report.plots import contrastive_diagnostics, read_log, save_figure, training_curves

cfg = notebook_config(profile, dataset, seeds, runs_dir, data_root, overrides)
# folders from the repository root, whatever the kernel's working directory (JupyterLab starts it in notebooks/)
figures, output_dir = notebook_folder(figures_dir), notebook_folder(output_dir)

# %% [markdown]
# ## The student under the adapted teacher
# The teacher and its pseudo-labels are the runs of notebook 02 (reused, not retrained).

# %%
labels = S.pseudo_labels(cfg, S.teacher_adaptation(cfg))
student = S.knowledge_transfer(cfg, labels)
record(output_dir, "student_ap", student.metrics["ap"])
record(output_dir, "runs", {"knowledge_transfer": student.id})
curves = save_figure(training_curves(read_log(student), "knowledge transfer"), figures / "student_curves.png")

# %% [markdown]
# ## Proposition 3.1: margin and false negatives, debiased vs uniform negatives
# The table gives each sampler's margin at the last logged iteration and its false-negative rate averaged over
# training. Proposition 3.1 expects the debiased sampler to draw fewer false negatives (a smaller $1-p$) than
# uniform sampling; the table shows what these runs measured.

# %%
uniform = S.knowledge_transfer(with_student_contrastive(cfg, "embedding", "uniform"), labels)
logs = {"debiased (fusion)": read_log(student), "uniform": read_log(uniform)}
save_figure(contrastive_diagnostics(logs), figures / "proposition_3_1_margin_fnr.png")
proposition = pd.DataFrame([{"negatives": name, "final margin Delta_emp": float(log["pxl/margin"].iloc[-1]),
                             "mean false-negative rate": float(log["pxl/fnr"].mean())} for name, log in logs.items()])
for row in proposition.to_dict("records"):
    record(output_dir, f"final_margin {row['negatives']}", row["final margin Delta_emp"])
    record(output_dir, f"mean_fnr {row['negatives']}", row["mean false-negative rate"])
proposition.set_index("negatives").round(4)

# %% [markdown]
# ## Try a variant
# Contrastive weight $\lambda_{pxl}$, temperature $T$, $R$, debias score, embedding, sampling scope, loss,
# label fraction and seed: pressing the button trains the variant through the registry (a repeat is
# instant; the button reads "training..." until it is done) and draws its margin and FNR beside the default's,
# then its loss curves.

# %%
from castlib.report.widgets import variant_panel

variant_panel(cfg, view="curves") if interactive else print("interactive=False: widget not shown")
