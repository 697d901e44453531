"""Luigi tasks of the face pipeline: ``luigi --module tasks <Task>``.

Tasks only declare parameters, dependencies and outputs; ``run()`` calls
pipeline/ (plain Python) or model/ (TensorFlow, imported inside ``run()``).
Importing the package makes configuration errors print as one line
(:mod:`tasks.errors`).
"""
import tasks.console  # noqa: F401, I001  (first: quiets TensorFlow's start-up and Luigi's scheduling lines)
from tasks.attributes import FitAttributeDirections, TrainAttributeClassifier
from tasks.classifier import TrainClassifier
from tasks.common import paths
from tasks.compare import CompareGANs
from tasks.complete import CompleteFaces
from tasks.completion import TrainCompletion
from tasks.crawl import CrawlDays, CrawlImages, RangeDaily
from tasks.encoder import TrainEncoder
from tasks.downloads import DownloadCelebA, DownloadLSUN, ImportImageNet, lsun
from tasks.errors import ConfigError, errors, install
from tasks.evaluate import CompareRuns, EvaluateGenerator
from tasks.faces import AlignShard, DetectAlignFaces
from tasks.labeled import DownloadCIFAR10, DownloadMNIST
from tasks.raw import RAW_TASKS, Sample, raw_task
from tasks.records import BuildTFRecords, RecordsDaily, RecordShard
from tasks.samples import ExportAttributeSweep, ExportSamples
from tasks.storage import install as install_storage
from tasks.storage import s3
from tasks.train import TrainDCGAN, TrainEGAN, TrainGAN
from tasks.tune import EvaluateTrial, TuneGAN

install()
install_storage()

__all__ = ["paths", "s3", "ConfigError", "errors", "Sample", "RAW_TASKS", "raw_task", "AlignShard",
           "DetectAlignFaces", "BuildTFRecords", "RecordShard", "RecordsDaily", "TrainGAN", "TrainDCGAN",
           "TrainEGAN", "ExportSamples", "ExportAttributeSweep", "TrainClassifier", "CompareGANs",
           "EvaluateGenerator", "CompareRuns", "TuneGAN", "EvaluateTrial",
           "TrainAttributeClassifier", "FitAttributeDirections", "CompleteFaces", "TrainCompletion", "TrainEncoder",
           "CrawlImages", "CrawlDays", "RangeDaily",
           "DownloadCelebA", "DownloadLSUN", "ImportImageNet", "lsun", "DownloadMNIST", "DownloadCIFAR10"]
