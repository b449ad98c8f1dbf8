"""Data: the two formats' readers, synthetic sets, splits, augmentation and loaders."""

from castlib.data.classes import ADE20K, CITYSCAPES, ClassList
from castlib.data.datasets import DATASETS, ADE20KInstances, CityscapesInstances, InstanceDataset
from castlib.data.loaders import (
    build_dataset,
    dataset_name,
    dataset_root,
    labelled_dataset,
    make_loader,
    make_splits,
    prepare_data,
    read_split_ids,
    split_files,
    unlabelled_dataset,
    val_dataset,
)
from castlib.data.sample import Batch, InstanceSample, collate
from castlib.data.transforms import EvalView, TrainViews, train_views

__all__ = [
    "ADE20K",
    "CITYSCAPES",
    "DATASETS",
    "ADE20KInstances",
    "Batch",
    "CityscapesInstances",
    "ClassList",
    "EvalView",
    "InstanceDataset",
    "InstanceSample",
    "TrainViews",
    "build_dataset",
    "collate",
    "dataset_name",
    "dataset_root",
    "labelled_dataset",
    "make_loader",
    "make_splits",
    "prepare_data",
    "read_split_ids",
    "split_files",
    "train_views",
    "unlabelled_dataset",
    "val_dataset",
]
