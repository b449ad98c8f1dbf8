"""What the kit shows a reader: tables (supplementary Tables 3-8 and the data tables), figures and widgets.

- :mod:`castlib.report.tables`: pandas tables and ``write_table`` (csv + markdown).
- :mod:`castlib.report.ablations`: supplementary Tables 3-8 (``table3(cfg)`` ... ``table8(cfg)``) from the runs.
- :mod:`castlib.report.plots`: matplotlib figures, saved atomically.
- :mod:`castlib.report.widgets`: ipywidgets front ends for the notebooks.
"""
