"""Tables as pandas DataFrames (notebooks show them; ``make reproduce`` writes csv and markdown)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from castlib.config import Config
from castlib.data.datasets import InstanceDataset
from castlib.data.loaders import dataset_name, read_split_ids, split_files
from castlib.data.splits import ade20k_split_sizes, round_half_up
from castlib.io import write_text_atomic
from castlib.paper import TABLE1_SPLITS


def split_table(cfg: Config, train_size: int) -> pd.DataFrame:
    """The split files of a config beside what supplementary Table 1 asks for a train set this size."""
    dataset = cfg.data.dataset
    rows = []
    fractions = cfg.data.label_fractions if dataset == "cityscapes" else [None]
    for fraction in fractions:
        labelled = read_split_ids(cfg, "labelled", fraction)
        unlabelled = read_split_ids(cfg, "unlabelled", fraction)
        if dataset == "cityscapes":
            target = (round_half_up(fraction * train_size), train_size - round_half_up(fraction * train_size))
        else:
            target = ade20k_split_sizes(train_size)
        rows.append({
            "dataset": dataset_name(cfg),
            "split": split_files(cfg, fraction)[0].name.replace("_labelled.txt", ""),
            "train images": train_size,
            "labelled": len(labelled),
            "unlabelled": len(unlabelled),
            "target (Table 1 proportions)": f"{target[0]} / {target[1]}",
            "paper (Table 1)": (f"{TABLE1_SPLITS[dataset]['labelled']} / {TABLE1_SPLITS[dataset]['unlabelled']}"
                                if fraction in (None, 0.10) else "-"),
        })
    return pd.DataFrame(rows)


def class_statistics(dataset: InstanceDataset) -> pd.DataFrame:
    """Per class: images containing it, instances, and median instance area (pixels)."""
    names = dataset.classes.names
    images, instances, areas = np.zeros(len(names), int), np.zeros(len(names), int), [[] for _ in names]
    for image_id in dataset.image_ids:
        masks, labels = dataset.decode(dataset.annotation_path(image_id))
        for c in set(labels.tolist()):
            images[c] += 1
        for c, m in zip(labels.tolist(), masks, strict=True):
            instances[c] += 1
            areas[c].append(int(m.sum()))
    table = pd.DataFrame({
        "class": names,
        "images": images,
        "instances": instances,
        "median area (px)": [int(np.median(a)) if a else 0 for a in areas],
    })
    return table[table.instances > 0].sort_values("instances", ascending=False).reset_index(drop=True)


def provenance(table: pd.DataFrame) -> dict[str, str]:
    """Where a table came from, as a function of its runs alone: profile, dataset format, the data (synthetic or
    a real root, :func:`castlib.data.loaders.describe_data`), seeds, and the machines, torch versions and commits
    of the runs behind it (``table.attrs["runs_behind"]``), saying plainly when there are several."""
    attrs = table.attrs
    out = {key: str(attrs[key]) for key in ("profile", "dataset", "data") if key in attrs}
    if "seeds" in attrs:
        out["seeds"] = " ".join(map(str, attrs["seeds"]))
    behind = attrs.get("runs_behind") or {}
    for key, label in (("machine", "machines"), ("torch", "torch"), ("commit", "commits")):
        # one machine whatever threads a run used (the Runs section gives each run's)
        values = sorted({re.sub(r", \d+ threads?$", "", facts[key]) for facts in behind.values()})
        several = (f"{len(values)} {label}: the rows' runs come from more than one; " if len(values) > 1 else "")
        out[f"{label} of the runs"] = several + ("; ".join(values) if values else "no complete run")
    dirty = sorted({facts["commit"] for facts in behind.values() if facts["commit"].endswith("-dirty")})
    if dirty:
        out["uncommitted changes"] = f"runs made at {', '.join(dirty)} had uncommitted code changes"
    return out


def write_table(table: pd.DataFrame, stem: str | Path, caption: str = "") -> tuple[Path, Path]:
    """``stem.csv`` and ``stem.md`` (with an optional caption line), both atomic.

    A table from :mod:`castlib.report.paper_tables` also carries its caption, notes and provenance in
    ``table.attrs``: the csv then starts with ``# key: value`` lines (``pandas.read_csv(path, comment="#")``),
    and the markdown shows the display columns, the notes, the provenance and the run ids of each row."""
    stem = Path(stem)
    attrs = table.attrs
    caption = caption or attrs.get("caption", "")
    if "number" not in attrs:
        csv = write_text_atomic(stem.with_suffix(".csv"), table.to_csv(index=False))
        md_text = (f"{caption}\n\n" if caption else "") + table.to_markdown(index=False) + "\n"
        return csv, write_text_atomic(stem.with_suffix(".md"), md_text)
    facts = provenance(table)
    header = "".join(f"# {line}\n" for line in [caption, *attrs.get("notes", []),
                                                *(f"{k}: {v}" for k, v in facts.items())])
    csv = write_text_atomic(stem.with_suffix(".csv"), header + table.to_csv(index=False))
    shown = table[attrs.get("display_columns", list(table.columns))]
    behind = attrs.get("runs_behind") or {}
    runs = pd.DataFrame([{"run": rid, **facts} for rid, facts in behind.items()],
                        columns=["run", "stage", "seed", "commit", "machine", "torch"])
    lines = [f"## {caption}", "", shown.to_markdown(index=False), "", "Notes:", "",
             *(f"- {note}" for note in attrs.get("notes", [])), "", "Provenance:", "",
             *(f"- {k}: {v}" for k, v in facts.items()), "",
             "Runs per row (each with every run it consumes, stand-ins included; records: `../records/<id>/`):", "",
             *(f"- {row.variant}: {row.runs or 'none'}" for row in table.itertuples()), "",
             "Runs:", "", runs.to_markdown(index=False) if len(runs) else "none"]
    return csv, write_text_atomic(stem.with_suffix(".md"), "\n".join(lines) + "\n")


def publish_table(table: pd.DataFrame, tables_dir: str | Path, records: str | Path | None = None,
                  export: bool = True) -> tuple[Path, Path]:
    """Write a table built by :mod:`castlib.report.paper_tables` as ``tables_dir/table<number>.{csv,md}`` (main
    Table 3: ``main_table3.{csv,md}``) and export
    the records of every run behind it (:func:`castlib.engine.runs.export_records`) to ``records`` (default
    ``records/`` beside ``tables_dir``), so the committed table ships what it was read from. A table read from
    those records (``--from-records``, ``export=False``) exports nothing."""
    from castlib.engine.runs import Run, export_records

    tables_dir = Path(tables_dir)
    number = table.attrs["number"]
    written = write_table(table, tables_dir / (f"table{number}" if isinstance(number, int) else str(number)))
    folder, records = Path(table.attrs["runs_folder"]), Path(records or tables_dir.parent / "records")
    if export:
        export_records([Run(rid, folder / rid) for rid in table.attrs["runs_behind"]], records)
    return written
