"""Models: the DINOv2-S student, the Grounding DINO + SAM2 teacher, Table 8 backbones, projection heads.

``build_model(cfg, which, num_classes, pretrained=None)`` builds any of them (or loads one saved with
``save_pretrained``); every model returns a :class:`SegmentationOutput`.
"""

from castlib.models.base import SegmentationModel
from castlib.models.build import MODELS, build_model
from castlib.models.hub import PretrainedWeightsError
from castlib.models.output import SegmentationOutput
from castlib.models.student import Student
from castlib.models.teacher import Teacher

__all__ = ["MODELS", "PretrainedWeightsError", "SegmentationModel", "SegmentationOutput", "Student", "Teacher",
           "build_model"]
