"""TrainGAN / TrainDCGAN and the tasks that read a trained run, through a real (local)
Luigi scheduler on a tiny sample: one run folder per variant and settings, any run
folder usable by its card alone, bad settings refused before anything runs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import luigi
import pytest
from luigi.execution_summary import LuigiStatusCode


@pytest.fixture
def tiny(luigi_config):
    luigi_config("Sample", "n", 16)
    for section in ("TrainDCGAN", "TrainGAN"):
        luigi_config(section, "steps", 2)
        luigi_config(section, "batch_size", 4)
        luigi_config(section, "base_width", 8)
        luigi_config(section, "checkpoint_every", 1)
    luigi_config("ExportSamples", "n", 3)
    return luigi_config


def test_every_recipe_is_training_settings():
    """A recipe only names TrainDCGAN parameters, and a TrainDCGAN made with it holds its values."""
    import tasks
    from model.train.recipes import RECIPES, recipe

    names = set(tasks.TrainDCGAN.get_param_names())
    for name in RECIPES:
        task = tasks.TrainDCGAN(**recipe(name))
        for key, value in recipe(name).items():
            assert key in names and getattr(task, key) == value, (name, key)
    with pytest.raises(ValueError, match="choose from paper"):
        recipe("fast")


@pytest.mark.slow
def test_traindcgan_is_traingan_dcgan_and_any_run_exports(tiny, tmp_path, started_tasks):
    import tasks
    from model.train.recipes import DCGAN_DEFAULT, recipe

    # TrainDCGAN's defaults are a recipe's; with the paper's settings it is TrainGAN's run.
    dcgan, gan = tasks.TrainDCGAN(), tasks.TrainGAN(variant="dcgan", **recipe(DCGAN_DEFAULT))
    assert dcgan.run_dir() == gan.run_dir() and dcgan.run_dir().name.startswith("dcgan-")
    assert tasks.TrainDCGAN(**recipe("paper")).run_dir() == tasks.TrainGAN(variant="dcgan").run_dir() \
        != dcgan.run_dir()
    result = luigi.build([tasks.ExportSamples()], local_scheduler=True, detailed_summary=True)
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    assert gan.complete()  # the same run: TrainGAN --variant dcgan finds it done

    run = dcgan.run_dir()
    card = json.loads((run / "model_card.json").read_text())
    records = tasks.BuildTFRecords().folder()
    assert card["variant"] == "dcgan" and card["steps"] == 2 and card["resolution"] == 64
    assert card["dataset"]["name"] == "sample" and card["dataset"]["records"] == str(records)
    assert card["training"]["base_width"] == 8 and card["training"]["batch_size"] == 4
    export = Path(tasks.ExportSamples().output().path)
    files = json.loads((export / "samples.json").read_text())["files"]
    assert {"grid.png", "interpolations.png", "training.gif"} <= set(files)
    assert len(list((export / "samples").glob("*.png"))) == 3

    # A run folder copied elsewhere (no checkpoints) exports through --model, with nothing upstream.
    copy = tmp_path / "copied-run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("ckpt"))
    started_tasks.clear()
    task = tasks.ExportSamples(model=str(copy), n=2)
    assert luigi.build([task], local_scheduler=True)
    assert [t.split("_")[0] for t in started_tasks] == ["ExportSamples"]
    assert Path(task.output().path).parent.name == "sample" and (Path(task.output().path) / "grid.png").exists()


def test_bad_training_settings_are_refused_when_the_task_is_built(luigi_config):
    import tasks
    from tasks.errors import ConfigError
    with pytest.raises(ConfigError, match=r"\[TrainGAN\] batch_size = 0: must be >= 1; set --TrainGAN-batch-size"):
        tasks.TrainGAN(batch_size=0)
    with pytest.raises(ConfigError, match=r"\[TrainDCGAN\] lr = -1.0: must be > 0"):
        tasks.TrainDCGAN(lr=-1.0)
    with pytest.raises(ConfigError, match=r"\[TrainGAN\] augment = 'blur': must be .*unknown transform"):
        tasks.TrainGAN(augment="blur")
    with pytest.raises(ConfigError, match=r"\[TrainDCGAN\] data_fraction = 1.5: must be in \(0, 1\]"):
        tasks.TrainDCGAN(data_fraction=1.5)
    with pytest.raises(ValueError, match="wgan is not a valid choice"):
        tasks.TrainDCGAN(variant="wgan")
    luigi_config("DetectAlignFaces", "size", 50)
    with pytest.raises(ConfigError, match=r"\[DetectAlignFaces\] size = 50: .*--DetectAlignFaces-size"):
        tasks.TrainDCGAN()
    with pytest.raises(ConfigError, match=r"\[DetectAlignFaces\] dataset = 'mnist': holds labeled images"):
        tasks.DetectAlignFaces(dataset="mnist", size=64)


def test_model_that_is_not_a_run_fails_while_scheduling(luigi_config, tmp_path):
    import tasks
    task = tasks.ExportSamples(model=str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="not an exported run folder"):
        task.complete()
    assert not luigi.build([task], local_scheduler=True)


def test_make_run_prints_the_grid_its_command_line_writes(luigi_config):
    """`make run` passes the sample run's settings as upstream flags; the path it prints is
    that task's grid, not the grid of the same task with luigi.cfg's settings."""
    import tasks
    args = ["--TrainDCGAN-steps", "7", "--TrainDCGAN-ema", "0.5", "--n", "3"]
    with_defaults = tasks.ExportSamples(n=3).grid_path()
    printed = tasks.ExportSamples.grid_of(args)
    assert printed != with_defaults and printed.endswith("/grid.png")
    luigi_config("TrainDCGAN", "steps", 7)
    luigi_config("TrainDCGAN", "ema", 0.5)
    assert printed == tasks.ExportSamples(n=3).grid_path()


def test_augment_none_is_no_augmentation_in_the_folder_of_runs_without_it():
    """luigi drops an empty value on the command line, so ``--augment none`` is how one turns
    TrainDCGAN's default augmentation off there: the same task, and run folder, as ''."""
    import tasks
    from model.config import parse_policy

    off, none = tasks.TrainDCGAN(augment=""), tasks.TrainDCGAN(augment="none")
    assert none.augment == "" and none.task_id == off.task_id and none.run_dir() == off.run_dir()
    assert tasks.TrainDCGAN().augment == "translation,cutout,color" != off.augment
    assert parse_policy("none") == parse_policy("") == ()


@pytest.mark.parametrize("family, later, changes", [
    ("TrainDCGAN", ("data_fraction", "ema_bn_batches"), [{"data_fraction": 0.5}, {"ema_bn_batches": 20}]),
    ("CompareGANs", ("data_fraction",), [{"data_fraction": 0.5}]),
    ("TrainEGAN", ("data_fraction", "ema_bn_batches", "weight_warmup", "target", "d_condition", "c_every_block",
                   "sharpness_norm", "z_pairs", "pairs_from", "c_modulation", "c_lowpass", "c_lowpass_draft",
                   "pair_weight", "c_lowpass_only", "c_lowpass_fit", "c_lowpass_split", "mode_seeking", "ema_raw_mix"),
     [{"data_fraction": 0.5}, {"ema": 0.999, "ema_bn_batches": 20}, {"weight_warmup": 100},
      {"target": "quantile", "c_distribution": "uniform"},
      {"target": "quantile", "c_distribution": "uniform", "d_condition": True}, {"c_every_block": True},
      {"sharpness_norm": 12.0}, {"target": "quantile", "c_distribution": "uniform", "z_pairs": True},
      {"target": "quantile", "c_distribution": "uniform", "z_pairs": True, "pairs_from": "extra"},
      {"c_modulation": True}, {"c_lowpass": True}, {"c_lowpass": True, "c_lowpass_draft": True},
      {"target": "quantile", "c_distribution": "uniform", "z_pairs": True, "pair_weight": 3.0},
      {"c_lowpass": True, "c_lowpass_only": True}, {"c_lowpass": True, "c_lowpass_fit": True},
      {"c_lowpass": True, "c_lowpass_fit": True, "c_lowpass_split": True}, {"mode_seeking": 1.0},
      {"c_lowpass": True, "c_lowpass_fit": True, "ema": 0.999, "ema_raw_mix": True}]),
])
def test_parameters_added_later_keep_the_earlier_runs_folders(luigi_config, family, later, changes):
    """A parameter a task gained after runs existed: at its default a run's version is the hash
    of the parameters it had before (its folder is found again); set, it makes a new version."""
    import tasks
    from pipeline.versions import digest
    from tasks.common import upstream, version

    cls = getattr(tasks, family)
    task = cls(dataset="sample")
    assert set(cls.added_later) == set(later)
    before = {k: v for k, v in task.to_str_params(only_significant=True).items() if k not in later}
    assert version(task) == digest([family, before, sorted(version(t) for t in upstream(task))])
    changed = {version(cls(dataset="sample", **change)) for change in changes}
    assert len(changed) == len(changes) and version(task) not in changed
    # Each named parameter exists; the value named for it is today also its default (a changed
    # default must decide whether the earlier runs keep their folders).
    declared = dict(cls.get_params())
    for name, before in cls.added_later.items():
        assert getattr(task, name) == declared[name].normalize(before), name


@pytest.mark.slow
def test_the_thesis_cifar10_dcgan_trains_on_cifar10_and_scores_every_epoch(luigi_config, tiny_feature_network,
                                                                             tmp_path):
    """The README's CIFAR-10 command, tiny: the thesis recipe (G twice per D step) on 32x32 RGB
    records, an eval.csv row at every eval_every (an epoch in the full command)."""
    from labeled_data import use_cifar10, write_cifar10

    import tasks
    from model.train.recipes import recipe

    use_cifar10(luigi_config, write_cifar10(tmp_path / "cifar", n_train=16, n_test=8))
    for key, value in (("n", 8), ("training_n", 8), ("feature_network", tiny_feature_network)):
        luigi_config("EvaluateGenerator", key, value)
    task = tasks.TrainDCGAN(dataset="cifar10", **recipe("thesis"), steps=2, batch_size=8, base_width=8,
                            eval_every=1, checkpoint_every=1)
    result = luigi.build([task], local_scheduler=True, detailed_summary=True)
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    card = json.loads(Path(task.output()["card"].path).read_text())
    assert (card["resolution"], card["channels"]) == (32, 3) and card["training"]["g_steps"] == 2
    assert card["dataset"]["name"] == "cifar10" and card["dataset"]["splits"] == {"train": 16, "test": 8}
    rows = (task.run_dir() / "eval.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
