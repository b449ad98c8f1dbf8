"""Which of the paper's orderings the runs show (issue 31: no ordering is read by hand).

For each supplementary table (3-8) and each metric it orders, every pair of rows whose paper values differ is a
claim "a > b" (the paper's order); main Table 3's rows that the supplementary tables' runs hold (full pipeline =
Table 3's CAST student, theta_s+; no student FT = Table 6's student under T2, theta_s*; distillation only = Table
6's student under T1, theta_s*) add its claims. Each claim is read from the tables' per-seed values (the hidden
``<metric> seeds`` column of ``tableN.csv``), paired by seed:

- ``holds``: n >= 2 paired differences, every one with the paper's sign, and their mean above its paired standard
  error (sample std / sqrt(n));
- ``not seen``: n >= 2 and not that (a seed disagrees, or the difference is within its standard error);
- ``one seed``: a single paired difference (a table run at one seed, or two one-evaluation cells);
- ``not run``: a side has no value.

A one-evaluation cell (Table 6's T1: weights that do not depend on the seed) pairs with every seed of the other.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from castlib import paper
from castlib.engine.stages import CAST_VARIANT
from castlib.io import write_text_atomic

# The metrics of each table whose paper values order its rows (AP50 orders the same pairs the same way or ties;
# Table 3's "delta vs SOTA" is its student AP minus one shared baseline).
ORDERED_METRICS = {3: ("teacher AP", "student AP"), 4: ("AP", "train time ratio"), 5: ("AP",), 6: ("AP",),
                   7: ("AP", "train time ratio"), 8: None}  # Table 8: each label-fraction column
# Main Table 3 (training stages) rows as (table, row, metric) of the supplementary tables that hold their runs.
MAIN_TABLE3_ROWS = {"full_pipeline": (3, CAST_VARIANT, "student AP"),
                    "no_student_ft": (6, "student_under_t2", "AP"),
                    "distillation_only": (6, "student_under_t1", "AP")}
VERDICTS = ("holds", "not seen", "one seed", "not run")


def read_tables(folder: str | Path) -> dict[int, pd.DataFrame]:
    """The ``tableN.csv`` files (N = 3-8) in ``folder`` that hold per-seed values, by number (a table written
    before they existed, without ``<metric> seeds`` columns, is left out: :func:`left_out`)."""
    out = {}
    for number in ORDERED_METRICS:
        path = Path(folder) / f"table{number}.csv"
        if path.is_file():
            table = pd.read_csv(path, comment="#")
            if any(c.endswith(" seeds") and c != "n seeds" for c in table.columns):  # "n seeds": the old format
                out[number] = table
    return out


def left_out(folder: str | Path) -> list[str]:
    """The ``tableN.csv`` files of ``folder`` that :func:`read_tables` leaves out (no per-seed values)."""
    read = read_tables(folder)
    return [f"table{n}.csv" for n in ORDERED_METRICS if (Path(folder) / f"table{n}.csv").is_file() and n not in read]


def _seeds(table: pd.DataFrame, row: str, metric: str) -> dict[str, float]:
    found = table[table["variant"] == row]
    column = f"{metric} seeds"
    if found.empty or column not in table.columns or pd.isna(found.iloc[0][column]):
        return {}
    return json.loads(found.iloc[0][column])


def paired(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    """a - b per seed; a one-evaluation side (``{"*": v}``) pairs with every seed of the other."""
    if "*" in a and "*" in b:
        return {"*": a["*"] - b["*"]}
    if "*" in a:
        return {s: a["*"] - v for s, v in b.items()}
    if "*" in b:
        return {s: v - b["*"] for s, v in a.items()}
    return {s: a[s] - b[s] for s in sorted(set(a) & set(b), key=str)}


def verdict(differences: list[float]) -> tuple[str, float]:
    """The verdict on paired differences (a - b, where the paper has a > b) and their standard error."""
    n = len(differences)
    if n == 0:
        return "not run", math.nan
    if n == 1:
        return "one seed", math.nan
    se = statistics.stdev(differences) / math.sqrt(n)
    mean = statistics.fmean(differences)
    return ("holds" if all(d > 0 for d in differences) and mean > se else "not seen"), se


def _claim(source: str, metric: str, a: str, b: str, paper_a: float, paper_b: float,
           values_a: Mapping[str, float], values_b: Mapping[str, float]) -> dict:
    diffs = paired(values_a, values_b)
    result, se = verdict(list(diffs.values()))
    mean = lambda v: statistics.fmean(v.values()) if v else math.nan  # noqa: E731
    return {"table": source, "metric": metric, "claim": f"{a} > {b}", "paper a": paper_a, "paper b": paper_b,
            "mean a": round(mean(values_a), 2), "mean b": round(mean(values_b), 2),
            "mean difference": round(mean(diffs), 2),
            "paired differences": " ".join(f"{s}:{d:+.2f}" for s, d in diffs.items()),
            "seeds agreeing": f"{sum(d > 0 for d in diffs.values())}/{len(diffs)}",
            "paired std error": round(se, 2), "verdict": result}


def _pairs(rows: Mapping[str, float]) -> list[tuple[str, str]]:
    """Pairs (a, b) of rows whose paper values order them, a first; rows in the order given."""
    return [(a, b) if rows[a] > rows[b] else (b, a) for a, b in itertools.combinations(rows, 2) if rows[a] != rows[b]]


def _paper_value(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def orderings(tables: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """Every ordering the paper claims among the rows of ``tables`` (supplementary Tables 3-8 by number, as built
    or read back by :func:`read_tables`), and main Table 3's where those tables hold its rows, with the
    reproduced means, per-seed paired differences, agreement and verdict."""
    claims = []
    for number, table in sorted(tables.items()):
        metrics = ORDERED_METRICS[number] or [c[len("paper "):] for c in table.columns if c.startswith("paper ")]
        for metric in metrics:
            if f"paper {metric}" not in table.columns:
                continue
            papers = {row: _paper_value(value) for row, value in zip(table["variant"], table[f"paper {metric}"],
                                                                       strict=True)}
            papers = {row: v for row, v in papers.items() if v is not None}
            for a, b in _pairs(papers):
                claims.append(_claim(f"supplementary Table {number}", metric, a, b, papers[a], papers[b],
                                     _seeds(table, a, metric), _seeds(table, b, metric)))
    held = {name: (number, row, metric) for name, (number, row, metric) in MAIN_TABLE3_ROWS.items()
            if number in tables}
    values = {name: paper.MAIN_TABLE3_STAGES[name] for name in held}
    for a, b in _pairs(values):
        claims.append(_claim("main Table 3", "maskAP", a, b, values[a], values[b],
                             _seeds(tables[held[a][0]], *held[a][1:]), _seeds(tables[held[b][0]], *held[b][1:])))
    return pd.DataFrame(claims, columns=["table", "metric", "claim", "paper a", "paper b", "mean a", "mean b",
                                         "mean difference", "paired differences", "seeds agreeing",
                                         "paired std error", "verdict"])


def write_orderings(folder: str | Path, header: list[str] | None = None) -> tuple[Path, Path] | None:
    """``orderings.{csv,md}`` in ``folder`` from the ``tableN.csv`` files there (None when there are none).
    ``header``: lines that say what the tables were measured on (profile, data)."""
    tables = read_tables(folder)
    if not tables:
        return None
    table = orderings(tables)
    counts = table["verdict"].value_counts()
    summary = ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICTS)
    skipped = left_out(folder)
    notes = [*(header or []), f"Read from table{', table'.join(map(str, sorted(tables)))}.csv in this folder "
             f"by castlib.report.orderings: {len(table)} orderings, {summary}.",
             *([f"Left out: {', '.join(skipped)} (written before tables held per-seed values; superseded)."]
               if skipped else []),
             "holds: every seed's paired difference has the paper's sign and their mean exceeds its paired "
             "standard error; not seen: a seed disagrees or the difference is within its standard error; one seed: "
             "a single paired difference; not run: a side has no value. Paired differences are a - b per seed "
             "(*: a one-evaluation cell, paired with every seed)."]
    folder = Path(folder)
    csv = write_text_atomic(folder / "orderings.csv", "".join(f"# {n}\n" for n in notes) + table.to_csv(index=False))
    md = ["## Which of the paper's orderings the runs show", "", *(f"- {n}" for n in notes), "",
          table.to_markdown(index=False) if len(table) else "no ordering to read", ""]
    return csv, write_text_atomic(folder / "orderings.md", "\n".join(md))
