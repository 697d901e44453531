"""Exporting samples of a trained run."""
from __future__ import annotations

import luigi

from pipeline.atomic import atomic_dir
from tasks.common import processed_dir, version
from tasks.storage import target
from tasks.train import TrainedRun


class ExportSamples(TrainedRun, luigi.Task):
    """Samples of a run's exported generator (any variant, read through its model card), in
    ``processed/exports/{dataset}/{variant}-{version}/``: ``grid.png`` (8x8),
    ``samples/0000.png ...`` (``n`` images), ``interpolations.png`` (one row per random
    pair of z, spherical interpolation), one grid per extra generator input (a class:
    one row per class; codes or attributes: each swept along the rows),
    ``training.gif`` (the fixed-noise grid over training) and ``samples.json``.
    """
    n = luigi.IntParameter(default=64, description="Number of individual sample PNGs.")
    seed = luigi.IntParameter(default=0, description="Seed of the sample inputs.")
    interpolations = luigi.IntParameter(default=8, description="Rows of the interpolation strip "
                                                               "(pairs of random z).")
    interpolation_steps = luigi.IntParameter(default=10, description="Images per interpolation row.")

    def output(self):
        return target(processed_dir("exports", self.run_dataset(), f"{self.run_variant()}-{version(self)}"),
                      folder=True)

    def run(self):
        from model.train.sampling import export_samples

        with atomic_dir(self.output().path) as tmp:
            export_samples(self.run_folder(), tmp, self.n, self.seed, self.interpolations,
                           self.interpolation_steps)

    def grid_path(self) -> str:
        return f"{self.output().path}/grid.png"

    @classmethod
    def grid_of(cls, args: list[str]) -> str:
        """The ``grid.png`` of ``luigi --module tasks ExportSamples ARGS``: the task built as
        that command line builds it, its upstream flags (``--TrainDCGAN-steps 800``) included
        (what ``make run`` prints)."""
        from luigi.cmdline_parser import CmdlineParser
        with CmdlineParser.global_instance([cls.get_task_family(), *args]) as parser:
            return parser.get_task_obj().grid_path()


class ExportAttributeSweep(TrainedRun, luigi.Task):
    """What each attribute code c of an EGAN run (or any run whose card declares
    ``attribute`` inputs) does: per c, a grid with a fixed draw of the other inputs per
    row and c swept across the columns from 0 to ``max``, in
    ``processed/exports/{dataset}/{variant}-{version}-sweep/{input}_{name}.png``.
    """
    variant = luigi.Parameter(default="egan", description="Variant whose run to use (egan: TrainEGAN's).")
    max = luigi.FloatParameter(default=2.0, description="Largest c of the sweep (the thesis shows 1, 2 and 5).")
    rows = luigi.IntParameter(default=8, description="Rows: draws of z (and the other inputs).")
    columns = luigi.IntParameter(default=11, description="Values of c from 0 to max.")
    seed = luigi.IntParameter(default=0, description="Seed of the rows' draws.")

    def output(self):
        return target(processed_dir("exports", self.run_dataset(), f"{self.run_variant()}-{version(self)}-sweep"),
                      folder=True)

    def run(self):
        from model.train.sampling import attribute_sweeps

        with atomic_dir(self.output().path) as tmp:
            attribute_sweeps(self.run_folder(), tmp, self.max, self.rows, self.columns, self.seed)
