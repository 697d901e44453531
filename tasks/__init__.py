"""Luigi tasks of the face pipeline: ``luigi --module tasks <Task>``.

Tasks only declare parameters, dependencies and outputs; ``run()`` calls
pipeline/ (plain Python) or model/ (TensorFlow, imported inside ``run()``).
"""
from tasks.common import paths
from tasks.export import ExportSamples
from tasks.faces import AlignShard, DetectAlignFaces
from tasks.raw import RAW_TASKS, Sample, raw_task
from tasks.records import BuildTFRecords
from tasks.train import TrainDCGAN

__all__ = ["paths", "Sample", "RAW_TASKS", "raw_task", "AlignShard", "DetectAlignFaces",
           "BuildTFRecords", "TrainDCGAN", "ExportSamples"]
