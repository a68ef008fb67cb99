"""Object detection datasets, one file per annotation format: YOLO txt (yolo.py), COCO JSON
(coco.py) and Pascal VOC XML (voc.py), on the shared loading, letterboxing and augmentation of
base.py. Importing the package registers all three."""
from aicore.tasks.detection.datasets.base import (BBOX_PARAMS, OUTSIDE_TOLERANCE,  # noqa: F401
                                                  DetectionDataset, Record, check_box,
                                                  detection_collate, image_hw)
from aicore.tasks.detection.datasets.coco import COCODetectionDataset  # noqa: F401
from aicore.tasks.detection.datasets.voc import VOCDetectionDataset  # noqa: F401
from aicore.tasks.detection.datasets.yolo import YOLODetectionDataset  # noqa: F401

__all__ = ["BBOX_PARAMS", "OUTSIDE_TOLERANCE", "COCODetectionDataset", "DetectionDataset",
           "Record", "VOCDetectionDataset", "YOLODetectionDataset", "check_box",
           "detection_collate", "image_hw"]
