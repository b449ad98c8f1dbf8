"""cast-kit: a reproducibility kit for CAST (Taghavi et al., arXiv 2505.21904).

The package is organised by concern: ``data`` (formats, synthetic sets, splits, augmentation),
``config`` (profiles), ``paper`` (the paper's reported numbers) and, as the kit grows, models,
losses, the training engine, evaluation, tables, plots and widgets. Notebooks import from here.
"""

__version__ = "0.1.0"
