"""Issue 32: a full disk (ENOSPC, or torch.save's inline_container error on one) anywhere the kit writes is one
`error:` line naming the folder, the space the write needs and the space free, with nothing partial left: the
write is simulated failing (the test machine's disk is not filled)."""

from __future__ import annotations

import errno
import os
import re

import pytest
import torch
from PIL import Image

from castlib.io import DiskFullError, save_image_atomic, write_text_atomic

TORCH_FULL = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")  # torch 2.x


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _leftovers(folder):
    return sorted(p.name for p in folder.rglob(".*.tmp"))


def test_a_full_disk_while_drawing_a_synthetic_set_is_one_error_and_leaves_no_set(cli, guard, workspace, monkeypatch):
    save = Image.Image.save
    calls = []

    def fill_up(self, fp, *args, **kwargs):  # the disk fills after the first images
        calls.append(fp)
        if len(calls) > 8:
            _enospc()
        return save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", fill_up)
    out = workspace / "set"
    check = guard()
    code, err = cli("synth", "--format", "cityscapes", "--out", out, "--train", "4", "--val", "1", "--height", "64",
                    "--width", "128")
    lines = [line for line in err.splitlines() if line.strip() and "synthetic cityscapes" not in line]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"error: {out}: no space left on the device: the synthetic set (5 images, ")
    assert "each) needs about " in lines[0] and " free there; free some space" in lines[0]
    assert not out.exists()  # what it had drawn is removed: the set is redrawn whole next time
    monkeypatch.setattr(Image.Image, "save", save)
    assert cli("synth", "--format", "cityscapes", "--out", out, "--train", "4", "--val", "1", "--height", "64",
               "--width", "128")[0] == 0
    check.check()


def test_a_full_disk_while_writing_split_files_names_the_folder(cli, private, guard, workspace, monkeypatch):
    assert cli("prepare", *private, "--set", "data.label_fractions=[0.1]")[0] == 0  # draws the set
    folder = workspace / "data_splits" / "cityscapes-synthetic-smoke"
    before = {p: p.read_bytes() for p in folder.iterdir()}
    real_open = open

    def full_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if "w" in mode:
            f.write = _enospc
        return f

    monkeypatch.setattr("castlib.io.open", full_open, raising=False)
    check = guard()
    code, err = cli("prepare", *private)  # writes the 5% and 30% files too
    assert code == 2 and err.startswith(f"error: {folder}: no space left on the device: writing "), err
    assert "needs about " in err and len(err.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in folder.iterdir()} == before and not _leftovers(folder)
    check.check()


def _checkpoint_args():
    model = torch.nn.Linear(64, 64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return {"model": model, "optimizer": optimizer,
            "scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1)}


@pytest.mark.parametrize("failure", [TORCH_FULL, OSError(errno.ENOSPC, "No space left on device")])
def test_a_full_disk_while_checkpointing_keeps_the_last_checkpoint(workspace, monkeypatch, failure):
    from castlib.engine.checkpoint import load_checkpoint, save_checkpoint

    path = workspace / "run" / "checkpoints" / "last.pt"
    save_checkpoint(path, iteration=2, **_checkpoint_args())
    before = path.read_bytes()

    def full(state, f):
        with open(f, "wb") as out:
            out.write(b"half a checkpoint")
        raise failure

    monkeypatch.setattr("castlib.engine.checkpoint.torch.save", full)
    with pytest.raises(DiskFullError) as e:
        save_checkpoint(path, iteration=4, **_checkpoint_args())
    assert e.value.path == path.parent
    assert "no space left on the device" in str(e.value)
    assert re.search(r"writing last\.pt needs about 2\d\.\d KiB, [\d.]+ [KMGT]i?B free there", str(e.value))
    assert path.read_bytes() == before and not _leftovers(path.parent)
    assert load_checkpoint(path)["iteration"] == 2


def test_a_full_disk_during_training_is_one_error_naming_the_checkpoint_folder(cli, private, guard, workspace,
                                                                             monkeypatch):
    """`RuntimeError: [enforce fail at inline_container.cc:672]` was a traceback."""
    assert cli("prepare", *private)[0] == 0

    def full(state, f):
        raise TORCH_FULL

    monkeypatch.setattr("castlib.engine.checkpoint.torch.save", full)
    code, err = cli("train", "--stage", "teacher_finetune", *private, "--set", "train.checkpoint_every=1")
    lines = [line for line in re.split(r"[\r\n]|(?=error: )", err) if line.startswith("error") or "Traceback" in line]
    assert code == 2 and len(lines) == 1, err
    folder = lines[0].removeprefix("error: ").split(": ")[0]
    assert folder.startswith(str(workspace / "results" / "runs")) and folder.endswith("/checkpoints")
    assert "no space left on the device" in lines[0] and "writing last.pt needs about " in lines[0]
    assert not list((workspace / "results" / "runs").rglob("*.pt")) and not _leftovers(workspace / "results")


def test_a_full_disk_while_writing_pseudo_labels_or_images_names_the_folder(workspace, monkeypatch):
    folder = workspace / "run" / "pseudo_labels" / "city"
    monkeypatch.setattr(Image.Image, "save", lambda self, fp, *a, **k: _enospc())
    with pytest.raises(DiskFullError) as e:
        save_image_atomic(folder / "a_gtFine_instanceIds.png", Image.new("I;16", (128, 64)))
    assert e.value.path == folder and "writing a_gtFine_instanceIds.png needs about 16.0 KiB" in str(e.value)
    assert not _leftovers(folder) and not (folder / "a_gtFine_instanceIds.png").exists()


def test_a_full_disk_while_writing_a_table_names_the_folder(workspace, monkeypatch):
    import pandas as pd

    from castlib.report.tables import write_table

    out = workspace / "tables"
    write_text_atomic(out / "table3.csv", "old\n")
    monkeypatch.setattr("castlib.io.os.fsync", _enospc)  # the data reach the disk at fsync (delayed allocation)
    with pytest.raises(DiskFullError) as e:
        write_table(pd.DataFrame({"a": [1.0]}), out / "table3")
    assert e.value.path == out and "writing table3.csv needs about " in str(e.value)
    assert (out / "table3.csv").read_text() == "old\n" and not _leftovers(out)


def test_a_full_disk_outside_castlib_io_is_still_one_error(cli, monkeypatch, workspace):
    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(workspace / "preds" / "a.png"))

    monkeypatch.setattr("castlib.__main__.cmd_synth", full)
    code, err = cli("synth", "--format", "cityscapes", "--out", workspace / "x")
    assert code == 2 and err.strip().startswith(f"error: {workspace / 'preds'}: no space left on the device"), err
