"""Class lists of the two benchmarks.

Cityscapes' thing classes and their label ids come from ``cityscapesscripts.helpers.labels``
(the 8 evaluated classes with instances). ADE20K's are the 100 categories of the instance
benchmark (``ade20k_instance_imgCatIds.json`` of the Mask2Former data preparation); the
annotation PNGs store their 1-based id in the red channel.
"""

from __future__ import annotations

from dataclasses import dataclass

from cityscapesscripts.helpers.labels import id2label, labels, name2label


@dataclass(frozen=True)
class ClassList:
    """Contiguous training labels ``0..C-1`` and the dataset's own ids for them."""

    dataset: str
    names: tuple[str, ...]
    dataset_ids: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.names)

    def label_of_id(self, dataset_id: int) -> int:
        return self.dataset_ids.index(dataset_id)

    def prompt(self) -> str:
        """The Grounding DINO text prompt, e.g. ``"person . rider . car ."``."""
        return " . ".join(self.names) + " ."


def _cityscapes_things() -> ClassList:
    things = sorted((lab for lab in labels if lab.hasInstances and not lab.ignoreInEval), key=lambda lab: lab.id)
    return ClassList("cityscapes", tuple(lab.name for lab in things), tuple(lab.id for lab in things))


CITYSCAPES = _cityscapes_things()

ADE20K_INSTANCE_NAMES = (
    "bed", "windowpane", "cabinet", "person", "door", "table", "curtain", "chair", "car", "painting",
    "sofa", "shelf", "mirror", "armchair", "seat", "fence", "desk", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "box", "column", "signboard", "chest of drawers", "counter", "sink",
    "fireplace", "refrigerator", "stairs", "case", "pool table", "pillow", "screen door", "bookcase",
    "coffee table", "toilet", "flower", "book", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "arcade machine", "bus", "towel", "light",
    "truck", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "apparel", "pole", "bannister", "ottoman", "bottle", "van", "ship", "fountain", "washer",
    "plaything", "stool", "barrel", "basket", "bag", "minibike", "oven", "ball", "food", "step",
    "trade name", "microwave", "pot", "animal", "bicycle", "dishwasher", "screen", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "plate", "monitor", "bulletin board",
    "radiator", "glass", "clock", "flag",
)  # fmt: skip
ADE20K = ClassList("ade20k", ADE20K_INSTANCE_NAMES, tuple(range(1, len(ADE20K_INSTANCE_NAMES) + 1)))

CLASS_LISTS = {classes.dataset: classes for classes in (CITYSCAPES, ADE20K)}  # keyed as castlib.paper.DATASET_NAMES

__all__ = ["ADE20K", "CITYSCAPES", "CLASS_LISTS", "ClassList", "id2label", "name2label"]
