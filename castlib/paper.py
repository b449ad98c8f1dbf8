"""The paper's reported numbers, typed once, from ``shared/paper/supplementary.md``.

Tables that print a paper value beside a reproduced one read it from here; nothing else in the
kit repeats these numbers. AP values are percentages (maskAP on Cityscapes val unless stated).
"""

from __future__ import annotations

# Supplementary Table 1: semi-supervised splits.
TABLE1_SPLITS = {
    "cityscapes": {"classes": 8, "train": 2975, "labelled": 298, "unlabelled": 2677, "val": 500},
    "ade20k": {"classes": 100, "train": 20210, "labelled": 1000, "unlabelled": 2537, "val": 2000},
}
# The kit's datasets are the paper's two benchmarks, Table 1's rows: the one list every other one reads
# (config choices, class lists, readers, synthetic writers).
DATASET_NAMES = tuple(TABLE1_SPLITS)
# Label fractions (Table 8) and training lengths (section D) are config defaults: configs/defaults.yaml.

# The supplementary tables whose numbers the kit reproduces, typed once (the command line, the plan, the notebooks and
# the Makefile read them; castlib.report.paper_tables builds each). Table 8 varies the Cityscapes label fraction.
REPRODUCED_TABLES = (3, 4, 5, 6, 7, 8)

# Supplementary Table 3: teacher adaptation ablation (teacher AP, student AP, delta vs SOTA).
TABLE3_TEACHER_ADAPTATION = {
    "finetune_only": {"teacher_ap": 28.7, "student_ap": 32.0, "delta_vs_sota": 1.2},
    "self_training": {"teacher_ap": 29.7, "student_ap": 32.2, "delta_vs_sota": 1.5},
    "self_training_contrastive": {"teacher_ap": 30.5, "student_ap": 33.9, "delta_vs_sota": 3.1},
}
# The teacher adaptation variants, Table 3's rows: finetune_only (step A without L_pxl), self_training (A and B
# without L_pxl) and CAST's (A and B with L_pxl), the last.
TEACHER_VARIANTS = tuple(TABLE3_TEACHER_ADAPTATION)
CAST_TEACHER_VARIANT = TEACHER_VARIANTS[-1]

# Supplementary Table 4: loss variant (maskAP, maskAP50).
TABLE4_LOSS_VARIANT = {
    "infonce": {"ap": 32.2, "ap50": 56.5},
    "hinge": {"ap": 32.2, "ap50": 57.1},
}

# Supplementary Table 5: debias score formulation.
TABLE5_DEBIAS_SCORE = {
    "original": {"ap": 32.2, "ap50": 56.5},
    "squared": {"ap": 32.0, "ap50": 56.3},
    "sqrt": {"ap": 31.9, "ap50": 56.2},
}

# Supplementary Table 6: teacher choice (T1 zero-shot, T2 adapted).
TABLE6_TEACHER_CHOICE = {
    "teacher_t1_zero_shot": {"ap": 22.0, "ap50": 42.3},
    "teacher_t2_adapted": {"ap": 30.5, "ap50": 56.6},
    "student_under_t1": {"ap": 23.8, "ap50": 42.9},
    "student_under_t2": {"ap": 32.2, "ap50": 56.5},
}

# Supplementary Table 7: negative sampling scope.
TABLE7_SAMPLING_SCOPE = {
    "batch": {"ap": 32.2, "ap50": 56.5},
    "memory_bank": {"ap": 32.7, "ap50": 57.3},
}

# Supplementary Table 8: CAST (DINOv2-S) vs Guided Distillation backbones, maskAP by label fraction.
TABLE8_BACKBONES = {
    0.05: {"cast_dinov2_s": 30.7, "gd_resnet50": 23.9, "gd_dinov2_b": 25.1, "gd_dinov2_l": 28.8},
    0.10: {"cast_dinov2_s": 33.9, "gd_resnet50": 30.8, "gd_dinov2_b": 27.0, "gd_dinov2_l": 33.0},
    0.30: {"cast_dinov2_s": 40.4, "gd_resnet50": 35.6, "gd_dinov2_b": 35.4, "gd_dinov2_l": 39.1},
}

# Main Table 3: training stages, Cityscapes 10 %, maskAP (spec section 11). The rows the supplementary tables'
# runs hold are read by castlib.report.orderings; "no_teacher_adapt" (25.7) and "no_distill_sup" (21.1) have none.
MAIN_TABLE3_STAGES = {"full_pipeline": 33.9, "no_student_ft": 32.2, "no_teacher_adapt": 25.7,
                      "distillation_only": 23.8, "no_distill_sup": 21.1}

# Supplementary E.2 / E.4: reported training-time ratios of the variants.
TRAINING_TIME_RATIO = {"hinge_vs_infonce": 1.6, "memory_bank_vs_batch": 2.2}

# Main paper Fig. 2 (spec section 11, from the project page [W] and `statistics.png` [F]): teacher (Grounding DINO +
# SAM2) vs student (DINOv2-S + Mask2Former decoder), Cityscapes. The paper states no hardware, input size or
# precision (spec section 10). Memory in GB, latency in ms, FLOPs in G, parameters in M; AP is Cityscapes maskAP
# (the adapted teacher theta_T'' and the refined student theta_s+, main Table 1).
FIG2_EFFICIENCY = {
    "teacher": {"params_M": 568, "GFLOPs": 880, "latency_ms": 350.87, "peak_memory_GB": 5.6, "fps": 2.85, "ap": 30.5},
    "student": {"params_M": 52, "GFLOPs": 200, "latency_ms": 76.92, "peak_memory_GB": 0.8, "fps": 13.0, "ap": 33.9},
}

# Model sizes in parameters (main paper, spec section 6): Fig. 2's, typed once there.
MODEL_PARAMETERS = {which: row["params_M"] * 1e6 for which, row in FIG2_EFFICIENCY.items()}
