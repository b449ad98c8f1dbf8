"""What the kit shows a reader: tables (supplementary Tables 3-8 and the data tables), figures and widgets.

- :mod:`castlib.report.tables`: pandas tables and ``write_table`` (csv + markdown).
- :mod:`castlib.report.paper_tables`: supplementary Tables 3-8 (``table3(cfg)`` ... ``table8(cfg)``) and main Table 3
  from the runs; :mod:`castlib.report.jobs` trains their runs with several worker processes.
- :mod:`castlib.report.costs`: what the runs of a plan cost (GPU hours, disk).
- :mod:`castlib.report.orderings`: which of the paper's orderings the tables' runs show.
- :mod:`castlib.report.plots`: matplotlib figures, saved atomically.
- :mod:`castlib.report.widgets`: ipywidgets front ends for the notebooks.
"""
