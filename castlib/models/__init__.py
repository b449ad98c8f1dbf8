"""Models: the DINOv2-S student, the Grounding DINO + SAM2 teacher, Table 8 backbones, projection heads."""

from castlib.models.output import SegmentationOutput

__all__ = ["SegmentationOutput"]
