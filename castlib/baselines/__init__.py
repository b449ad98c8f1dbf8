"""Baselines of the paper's comparisons, trained on the kit's engine, data and evaluation.

- :mod:`castlib.baselines.guided_distillation`: Guided Distillation (Berrada et al., WACV 2024), the baseline of
  supplementary Table 8 and of main Table 3's "delta vs SOTA" column.
"""
