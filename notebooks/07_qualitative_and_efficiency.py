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
# # 07 · Qualitative results and efficiency
#
# Supplementary Fig. 1 shows teacher predictions beside the student's on Cityscapes validation images;
# main-paper Fig. 2 measures what distillation buys: the student has about a tenth of the teacher's
# parameters, runs several times faster and needs a fraction of its memory, at a higher AP.
# Here both come from the trained runs of the CAST pipeline (notebooks 02-04, reused); every figure and table
# names its data (synthetic set, image size, counts, or the real root).
#
# **Data and what the numbers mean.** `smoke`: 40 train and 10 val synthetic images (128x256) in the Cityscapes
# format and tiny models barely trained: maskAP is 0 by design, the predictions are what such models draw, and
# parameters, latency and memory are the tiny models' (their ratios are not the paper's); the paper-size columns
# count the paper's architectures on this machine. `mini`: 300 synthetic images, stand-in backbones at smaller
# sizes: small numbers, read for orderings. `paper`: real Cityscapes or ADE20K, the hub weights and a GPU: the
# paper's Fig. 2 setting.

# %% tags=["parameters"]
profile = "smoke"  # smoke | mini | paper
dataset = "cityscapes"  # cityscapes | ade20k
data_root = ""  # a real dataset root, or empty for the synthetic set of the profile
seeds = []  # unused here beyond the config (the CAST runs of the profile's `seed` are shown)
runs_dir = ""  # where runs live; empty: the profile's runs_dir
overrides = []  # more config overrides, as `castlib --set` takes them (the tests: a smaller synthetic set)
min_score = 0.5  # the student's predictions shown: score at least this
teacher_threshold = None  # the teacher's shown: box score above this; None: train.pseudo_labels.threshold (0.3)
figures_dir = "results/figures"  # relative: from the repository root
tables_dir = "results/tables"
output_dir = "results/notebooks/07_qualitative_and_efficiency"
interactive = True  # show the widgets (headless runs set False)

# %%
from castlib.data.loaders import describe_data
from castlib.distributed import resolve_device
from castlib.engine import stages as S
from castlib.eval.efficiency import fig2_table, write_fig2_table
from castlib.notebooks import notebook_config, notebook_folder, record
from castlib.report.plots import (
    efficiency_figure,
    prediction_figure,
    save_figure,
    selection_rule,
    validation_predictions,
)

cfg = notebook_config(profile, dataset, seeds, runs_dir, data_root, overrides)
# folders from the repository root, whatever the kernel's working directory (JupyterLab starts it in notebooks/)
figures, tables_dir, output_dir = notebook_folder(figures_dir), notebook_folder(tables_dir), notebook_folder(output_dir)
runs = S.cast(cfg)
record(output_dir, "data", describe_data(cfg))

# %% [markdown]
# ## Supplementary Fig. 1: teacher $\theta_T''$ vs refined student $\theta_s^\dagger$ on validation images
# The teacher's instances are those its pseudo-labels keep (box score above `train.pseudo_labels.threshold`,
# supplementary Table 2's 0.3); the student's, its Mask2Former instances scoring at least `min_score`. Each
# panel's title gives its count and the rule.

# %%
models = {"teacher": (runs["teacher"], "teacher"), "student": (runs["refined"], "student")}
samples, predictions = validation_predictions(cfg, models, min_score=min_score, teacher_threshold=teacher_threshold)
rules = {name: selection_rule(cfg, which, min_score, teacher_threshold) for name, (_, which) in models.items()}
record(output_dir, "instances_shown", {name: [len(p) for p in found] for name, found in predictions.items()})
record(output_dir, "instance_rules", rules)
predictions_png = save_figure(prediction_figure(samples, predictions, rules, data=cfg),
                              figures / "teacher_vs_student_predictions.png")

# %% [markdown]
# ## Fig. 2: parameters, FLOPs, latency, FPS and memory of the trained teacher and student
# Three column groups: the paper's numbers, the paper-size architectures (`configs/paper.yaml`) counted on this
# CPU (parameters and FLOPs; random weights, never run), and this profile's trained models measured in
# `eval.efficiency`'s setting (input size, batch, dtype, warm-up, repeats) on this machine. The notes and
# provenance under the table say what each is and where it ran.

# %%
efficiency = fig2_table(cfg, runs["teacher"].model_dir, runs["refined"].model_dir, resolve_device(cfg.device),
                        ap={"teacher": runs["teacher"].metrics["ap"], "student": runs["refined"].metrics["ap"]},
                        runs={"teacher": runs["teacher"].id, "student": runs["refined"].id})
write_fig2_table(efficiency, tables_dir / f"efficiency_trained_{cfg.data.dataset}")
measured = efficiency.set_index("metric")
record(output_dir, "efficiency", {
    which: {key: float(measured.loc[label, f"measured {which}"])
            for label, key in (("params (M)", "params_M"), ("latency (ms)", "latency_ms"), ("FPS", "fps"))}
    for which in ("teacher", "student")})
record(output_dir, "paper_size_params_M", {which: float(measured.loc["params (M)", f"paper-size {which}"])
                                           for which in ("teacher", "student")})
save_figure(efficiency_figure(efficiency), figures / "efficiency_teacher_vs_student.png")
efficiency
