"""EvaluateGenerator and CompareRuns end to end on a tiny sample DAG (real Luigi,
dlib, TensorFlow), with a small random-weight .keras feature network so that
neither torch nor ../shared is needed."""
from __future__ import annotations

import json
from pathlib import Path

import luigi
import pytest
from luigi.execution_summary import LuigiStatusCode
from PIL import Image


@pytest.fixture
def tiny(luigi_config, tiny_feature_network):
    network = tiny_feature_network
    luigi_config("Sample", "n", 24)
    luigi_config("TrainDCGAN", "steps", 2)
    luigi_config("TrainDCGAN", "batch_size", 8)
    luigi_config("TrainDCGAN", "base_width", 8)
    luigi_config("TrainDCGAN", "checkpoint_every", 1)
    luigi_config("TrainDCGAN", "eval_every", 1)
    luigi_config("EvaluateGenerator", "n", 16)
    luigi_config("EvaluateGenerator", "training_n", 16)
    luigi_config("EvaluateGenerator", "feature_network", network)
    luigi_config("EvaluateGenerator", "face_n", 8)
    luigi_config("EvaluateGenerator", "msssim_pairs", 20)
    luigi_config("EvaluateGenerator", "kid_subsets", 5)
    return luigi_config


@pytest.mark.slow
def test_evaluate_generator_reports_then_compare_runs(tiny):
    import tasks

    result = luigi.build([tasks.EvaluateGenerator()], local_scheduler=True, detailed_summary=True)
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    task = tasks.EvaluateGenerator()
    report = json.loads(Path(task.output()["json"].path).read_text())
    folder = Path(task.output()["json"].path).parent

    # Every figure, for the final generator and for the kept checkpoint before it.
    for key in ("fid", "kid", "kid_std", "face_detect_rate", "ms_ssim"):
        assert isinstance(report[key], float), key
    assert report["fid"] >= 0 and 0 <= report["face_detect_rate"] <= 1 and 0 <= report["ms_ssim"] <= 1
    # The reported (final) FID carries its bootstrap spread over the real set; checkpoints do not.
    assert report["fid_std"] > 0 and report["checkpoints"][-1]["fid_resamples"] == report["settings"]["fid_resamples"]
    assert "fid_std" not in report["checkpoints"][0]
    assert [(p["step"], p["source"]) for p in report["checkpoints"]] == [(1, "ckpt-1"), (2, "generator.keras")]
    assert report["steps"] == 2 and report["feature_dim"] == 8
    assert 2 <= report["n"] <= 16 and report["n"] == min(16, report["split_sizes"][report["split"]])
    assert (report["split"] == "test") == (report["split_note"] == "")
    assert set(report["real"]) == {"n", "face_detect_rate", "ms_ssim"}
    # TrainDCGAN's eval_every hook wrote one eval.csv row per checkpoint.
    assert [(e["step"], e["n"]) for e in report["training_evals"]] == [(1, report["n"]), (2, report["n"])]
    assert (Path(report["run_dir"]) / "eval.csv").exists()
    # Same weights, noise and real images: the checkpoint restored after training scores
    # what the live generator scored at that step.
    for during, after in zip(report["training_evals"], report["checkpoints"]):
        assert during["fid"] == pytest.approx(after["fid"], rel=1e-3, abs=1e-4)

    # The readable report shows the images, which exist.
    markdown = (folder / "report.md").read_text()
    for name in ("grid.png", "real_grid.png", "fid_over_steps.png"):
        assert f"]({name})" in markdown
        assert Image.open(folder / name).format == "PNG"
    assert Image.open(folder / "grid.png").size == (8 * 66 + 2, 8 * 66 + 2)

    # A second evaluation (another seed) reuses the run and the cached real features.
    other = tasks.EvaluateGenerator(seed=1)
    assert luigi.build([other], local_scheduler=True)
    assert Path(other.output()["json"].path).parent != folder

    compare = tasks.CompareRuns()
    assert luigi.build([compare], local_scheduler=True) and compare.complete()
    table = json.loads(Path(compare.output()["json"].path).read_text())
    assert len(table["runs"]) == 2 and table["differing_params"] == ["EvaluateGenerator.seed"]
    text = Path(compare.output()["md"].path).read_text()
    assert "| EvaluateGenerator.seed |" in text and text.count("report.md)") == 2
    # A new report makes the comparison stale.
    Path(other.output()["json"].path).write_text(json.dumps({**report, "fid": 1.0}))
    assert not tasks.CompareRuns().complete()


def test_choose_split_falls_back_with_a_note():
    from model.eval.evaluation import choose_split
    assert choose_split({"train": 80, "validation": 10, "test": 10}, "test") == ("test", "")
    split, note = choose_split({"train": 80, "validation": 10, "test": 1}, "test")
    assert split == "validation" and "'test' is missing" in note
    split, note = choose_split({"train": 80}, "test")
    assert split == "train" and "not generalisation" in note
    with pytest.raises(ValueError, match="no split"):
        choose_split({"train": 1}, "test")


def test_compare_runs_without_reports_is_one_clear_error(luigi_config):
    import tasks
    with pytest.raises(FileNotFoundError, match="EvaluateGenerator"):
        tasks.CompareRuns().paths()


def test_missing_feature_network_fails_while_scheduling(luigi_config, tmp_path):
    import tasks
    from model.eval.metrics import FeatureNetworkMissing
    luigi_config("EvaluateGenerator", "feature_network", tmp_path / "missing.pt")
    with pytest.raises(FeatureNetworkMissing, match="missing.pt not found"):
        tasks.EvaluateGenerator().complete()
    # Through the scheduler: nothing upstream runs, and the build fails.
    assert not luigi.build([tasks.EvaluateGenerator()], local_scheduler=True)
    assert not (tmp_path / "processed" / "models").exists()
