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
# # 07 · Qualitative results and efficiency
#
# Supplementary Fig. 1 shows teacher predictions beside the student's on Cityscapes validation images;
# main-paper Fig. 2 measures what distillation buys: the student has about a tenth of the teacher's
# parameters, runs several times faster and needs a fraction of its memory, at a higher AP.
# Here both come from the trained runs of the CAST pipeline (notebooks 02-04, reused). On `smoke` the
# models are tiny and untrained (few instances clear the score threshold), and the sizes are the smoke
# sizes: the figures show the format, not the method.

# %% tags=["parameters"]
profile = "smoke"  # smoke | mini | paper
dataset = "cityscapes"  # cityscapes | ade20k
data_root = ""  # a real dataset root, or empty for the synthetic set of the profile
seeds = []  # unused here beyond the config (the CAST runs of the profile's `seed` are shown)
runs_dir = ""  # where runs live; empty: the profile's runs_dir
overrides = []  # more config overrides, "key=value" (the tests: a smaller synthetic set)
min_score = 0.5  # predictions shown: score at least this
figures_dir = "results/figures"
tables_dir = "results/tables"
output_dir = "results/notebooks/07_qualitative_and_efficiency"
interactive = True  # show the widgets (headless runs set False)

# %%
from pathlib import Path

from castlib.engine import stages as S
from castlib.engine.distributed import resolve_device
from castlib.eval.efficiency import teacher_vs_student
from castlib.notebooks import notebook_config, record
from castlib.report.plots import efficiency_figure, prediction_figure, save_figure, validation_predictions
from castlib.report.tables import write_table

cfg = notebook_config(profile, dataset, seeds, runs_dir, data_root, overrides)
figures = Path(figures_dir)
runs = S.cast(cfg)

# %% [markdown]
# ## Supplementary Fig. 1: teacher $\theta_T''$ vs refined student $\theta_s^\dagger$ on validation images

# %%
samples, predictions = validation_predictions(
    cfg, {"teacher": (runs["teacher"], "teacher"), "student": (runs["refined"], "student")}, min_score=min_score)
record(output_dir, "instances_shown", {name: [len(p) for p in found] for name, found in predictions.items()})
save_figure(prediction_figure(samples, predictions), figures / "teacher_vs_student_predictions.png")

# %% [markdown]
# ## Fig. 2: parameters, latency, FPS and memory of the trained teacher and student
# Measured in `eval.efficiency`'s setting (input size, batch, dtype, warm-up, repeats), on this machine.

# %%
efficiency = teacher_vs_student(cfg, runs["teacher"].model_dir, runs["refined"].model_dir, resolve_device(cfg.device))
write_table(efficiency.reset_index(names="model"), Path(tables_dir) / f"efficiency_trained_{cfg.data.dataset}",
            f"Teacher vs student efficiency (main-paper Fig. 2), profile `{cfg.profile}`, the trained CAST runs "
            f"{runs['teacher'].id} and {runs['refined'].id}.")
record(output_dir, "efficiency", {m: {c: float(efficiency.loc[m, c]) for c in ("params_M", "latency_ms", "fps")}
                                  for m in ("teacher", "student")})
save_figure(efficiency_figure(efficiency), figures / "efficiency_teacher_vs_student.png")
efficiency.T
