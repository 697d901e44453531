"""Every benchmark script runs and prints its final JSON line: each bench/*.py once, with
tiny settings, in a process of its own with a hard timeout, on small data these tests make
(never ../shared/data), so the scripts the figures of docs/benchmarks.md come from keep
working with the code.

The figures of a smoke run mean nothing; only that the script ran to its JSON line with
the keys it documents. Each runs as ``python bench/<name>.py`` would, in a child forked
from one process that imported TensorFlow once (tests/script_runner.py): a fresh
interpreter per script spent a third of this file's CPU time importing TensorFlow.
bench/train_throughput.py and bench/studio.py have smoke tests of their own
(tests/test_bench_train_throughput.py, tests/test_bench_studio.py); bench/luigi_bench.py is
the Luigi benchmarks' shared module, not a script.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from components import require_inception
from PIL import Image
from script_runner import ScriptRunner

from model.train.recipes import recipe

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
#: Faces in the small CelebA copy: 4 per official partition (train, validation, test).
FACES = 12


# -- small data ---------------------------------------------------------------------------------

def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def celeba(tmp_path_factory) -> Path:
    """A CelebA copy in the official layout: ``FACES`` aligned 178x218 faces made from the two
    public-domain portraits (mirrored, shifted and lit differently, so no two are alike) and
    the four label files."""
    from test_source_tasks import EYES, label_files

    from pipeline.sources.sample_photos import portrait

    root = tmp_path_factory.mktemp("celeba")
    (root / "img_align_celeba").mkdir()
    names = [f"{i + 1:06d}.jpg" for i in range(FACES)]
    for i, name in enumerate(names):
        who = ("astronaut", "grace_hopper")[i % 2]
        (lx, ly), (rx, ry) = EYES[who]
        scale = 37 / np.hypot(rx - lx, ry - ly) * (1 + 0.03 * (i % 3))
        cx, cy = (lx + rx) / 2 + 2 * (i % 5), (ly + ry) / 2 - (i % 4)
        box = (round(cx - 89 / scale), round(cy - 111 / scale), round(cx + 89 / scale), round(cy + 107 / scale))
        face = portrait(who).crop(box).resize((178, 218), Image.LANCZOS)
        if i % 4 >= 2:
            face = face.transpose(Image.FLIP_LEFT_RIGHT)
        face = Image.fromarray(np.clip(np.asarray(face) * (0.85 + 0.03 * i), 0, 255).astype(np.uint8))
        (root / "img_align_celeba" / name).write_bytes(_jpeg(face))
    for name, data in label_files(names).items():
        (root / name).write_bytes(data)
    return root


@pytest.fixture(scope="module")
def records(celeba, tmp_path_factory) -> Path:
    """A 64x64 records version folder of the copy's faces (center 108x108 crop), written
    directly (no alignment), in the copy's official partition: 4 train, 4 validation, 4 test."""
    from pipeline.records import write_record_shard, write_version

    work = tmp_path_factory.mktemp("records")
    images, faces = [], []
    partitions = ("train", "validation", "test")
    for i, path in enumerate(sorted((celeba / "img_align_celeba").glob("*.jpg"))):
        rgb = Image.open(path).convert("RGB")
        images.append(np.asarray(rgb.crop((35, 55, 143, 163)).resize((64, 64), Image.BILINEAR)))
        faces.append({"key": path.name, "face": 0, "source": "celeba", "landmarks": [[0.0, 0.0]] * 68,
                      "transform": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
                      "meta": {"identity": i, "partition": partitions[i % 3]}})
    shard = work / "shard"
    shard.mkdir()
    summary = write_record_shard(shard, np.stack(images), faces, "key", {"train": 1.0})
    version = work / "v-smoke"
    version.mkdir()
    write_version(version, "smoke", 64, [("smoke/shard", shard, summary)], version="v-smoke")
    return version


@pytest.fixture(scope="module")
def run64(records, tmp_path_factory) -> Path:
    """A tiny 64x64 DCGAN run (base width 8) trained two steps on the records: its card,
    exported generator and checkpoint (for the discriminator)."""
    from model.config import TrainConfig
    from model.train.data import image_dataset
    from model.train.loop import train

    run = tmp_path_factory.mktemp("runs") / "dcgan-smoke"
    config = TrainConfig(base_width=8, batch_size=4, steps=2, checkpoint_every=1, log_every=1, seed=0,
                         precision="float32")
    train(config, image_dataset(records, "train", 4), run)
    return run


@pytest.fixture(scope="module")
def egan64(records, tmp_path_factory) -> Path:
    """A tiny 64x64 EGAN run (base width 8, sharpness by c through the blur mix as a feedback,
    the quantile target) trained two steps on the records."""
    from model.config import TrainConfig
    from model.train.data import image_dataset
    from model.train.loop import train

    run = tmp_path_factory.mktemp("runs") / "egan-smoke"
    options = {"extractors": ["sharpness"], "target": "quantile", "c_distribution": "uniform",
               "c_lowpass": True, "c_lowpass_draft": True, "sharpness_norm": 12.0}
    config = TrainConfig(base_width=8, batch_size=4, steps=2, checkpoint_every=1, log_every=1, seed=0,
                         precision="float32", variant="egan", options=options)
    train(config, image_dataset(records, "train", 4), run)
    return run


@pytest.fixture(scope="module")
def completion64(records, tmp_path_factory) -> Path:
    """A tiny completion network run (width 4) trained two steps on the records."""
    from model.apps.completion_net import train_completion
    from model.config import CompletionConfig

    run = tmp_path_factory.mktemp("completion") / "completion-smoke"
    config = CompletionConfig(steps=2, batch_size=4, width=4, d_width=4, precision="float32", log_every=1,
                              checkpoint_every=1, sample_every=0, seed=0)
    train_completion(config, records, run, {"name": "smoke", "records": str(records)})
    return run


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    """A small random-weight ``.keras`` feature network (16x16 RGB -> 8 features) that stands
    in for the FID Inception-v3 where a benchmark takes one."""
    import keras

    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
                            keras.layers.GlobalAveragePooling2D()])
    path = tmp_path_factory.mktemp("features") / "features.keras"
    net.save(path)
    return path


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    """A small MNIST copy (40 training and 20 test digits of random pixels) and the
    ``[DownloadMNIST] files`` value that vouches for it."""
    from labeled_data import write_mnist

    written = write_mnist(tmp_path_factory.mktemp("mnist"), n_train=40, n_test=20)
    return written.folder, written.files_json()


# -- the benchmarks -----------------------------------------------------------------------------

def _luigi_tiny(network: str, features: Path) -> list[str]:
    """``--set`` settings (bench/luigi_bench.py) that make a Luigi benchmark's runs and
    evaluations tiny: width 8, batch 4, the small feature network, few samples."""
    settings = {f"{network}.base_width": 8, "EvaluateGenerator.feature_network": features,
                "EvaluateGenerator.face_n": 4, "EvaluateGenerator.msssim_pairs": 4,
                "EvaluateGenerator.kid_subsets": 2, "EvaluateGenerator.training_n": 4,
                "DetectAlignFaces.jobs": 1}
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def args_align(d):
    return ["--data", d["celeba"] / "img_align_celeba", "--limit", 2, "--expect", 1, "--jobs", 1]


def args_capsnet(d):
    folder, files = d["mnist"]
    return ["--mnist", folder, "--workdir", d["tmp"] / "work", "--steps", 2, "--batch-size", 4, "--eval-every", 1,
            "--eval-n", 8, "--fractions", "0.5,1", "--set", f"DownloadMNIST.files={files}",
            "--set", "TrainGAN.base_width=8", "--set", "TrainGAN.precision=float32", "--set", "TrainClassifier.steps=5"]


def args_complete(d):
    return ["--run", d["run64"], "--completion", d["completion64"], "--records", d["records"], "--n", 2,
            "--masks", "center", "--steps", 2, "--restarts", 1, "--candidates", 2, "--precision", "float32",
            "--no-fid", "--timing-n", 1, "--grid", d["tmp"] / "grid.png"]


def args_conv_route(d):
    return ["--rounds", 1, "--batch", 1]


def args_egan(d):
    # one EGAN with two c, the quantile target against the edges' 12-norm: every branch of control()
    return ["--data", d["celeba"], "--workdir", d["tmp"] / "work", "--steps", 2, "--batch-size", 4,
            "--groups", "brightness,sharpness", "--target", "quantile", "--c-distribution", "uniform",
            "--sharpness-norm", 12, "--c-lowpass", "--c-lowpass-draft", "--c-lowpass-only", "--c-lowpass-fit",
            "--c-lowpass-split", "--z-pairs", "--pairs-from", "extra",
            "--pair-weight", 3, "--mode-seeking", 1, "--ema-raw-mix", "--samples", 2, "--baseline-recipe", "ema",
            *_luigi_tiny("TrainEGAN", d["features"]), "--set", "TrainDCGAN.base_width=8", "--set", "TrainEGAN.ema=0.9"]


def args_egan_mix(d):
    return ["--run", d["egan64"], "--scales", "1,2", "--samples", 2, "--diversity-n", 4, "--workdir", d["tmp"] / "work",
            "--records", d["records"], "--eval", f"feature_network={d['features']}", "--eval", "n=4",
            "--eval", "face_n=2", "--eval", "msssim_pairs=2", "--eval", "kid_subsets=2", "--eval", "fid_resamples=2"]


def args_fid_sanity(d):
    return ["--data", d["celeba"] / "img_align_celeba", "--n", 4, "--seeds", 2,
            "--feature-network", d["features"], "--plot", d["tmp"] / "fid_sanity.png"]


def args_fid_speed(d):
    require_inception()  # the benchmark of the FID Inception-v3 itself
    return ["--data", d["celeba"] / "img_align_celeba", "--n", 2, "--precisions", "reference,float32",
            "--batch-size", 2, "--no-sqrtm"]


def args_input_pipeline(d):
    return ["--records", d["records"], "--batch", 4, "--seconds", 0.2, "--train-steps", 1,
            "--train-batch", 4, "--train-width", 8]


def args_object_store(d):
    return ["--data", d["celeba"], "--limit", 0, "--workdir", d["tmp"] / "work"]


def args_project(d):
    return ["--model", d["run64"], "--records", d["records"], "--faces", 2, "--encoder-steps", 2,
            "--search-steps", 2, "--refine-steps", 2]


def args_quality(d):
    return ["--data", d["celeba"], "--workdir", d["tmp"] / "work", "--steps", 2, "--points", 1,
            "--batch-size", 4, "--precision", "float32", "--workers", 1, *_luigi_tiny("TrainDCGAN", d["features"])]


def args_rebuild(d):
    return ["--n", 4, "--shard-size", 2, "--work", d["tmp"] / "work"]


def args_scale(d):
    return ["--n", 4, "--shard-size", 2, "--celeba", d["celeba"], "--scheduler-tasks", 5, "--work", d["tmp"] / "work"]


def args_serving_engines(d):
    return ["--base-width", 8, "--repeats", 5]


def args_sharpness_norm(d):
    return ["--records", d["records"], "--split", "train", "--norms", "1,12", "--blurs", "1.5", "--unsharp", "0.5"]


def args_torch_peer(d):
    return ["--batch", 2, "--base-width", 4, "--steps", 1, "--repeats", 1]


#: bench script -> (its arguments from the data, the fixtures it needs, keys its JSON line has).
BENCHES = {
    "align": (args_align, ("celeba",), {"images_per_s", "speedup", "faces_found", "align_error_openface"}),
    "capsnet": (args_capsnet, ("mnist",), {"runs", "less_data", "overhead", "claims", "classifier_test_accuracy"}),
    "complete": (args_complete, ("run64", "completion64", "records"), {"masks", "targets", "real_face_rate"}),
    "conv_route": (args_conv_route, (), {"layers", "agrees", "skipped"}),
    "egan": (args_egan, ("celeba", "features"), {"rho", "control", "quality", "minutes"}),
    "egan_mix": (args_egan_mix, ("egan64", "records", "features"), {"run", "scales", "seconds"}),
    "fid_sanity": (args_fid_sanity, ("celeba", "features"), {"fid_self", "fid_halves", "blur", "noise"}),
    "fid_speed": (args_fid_speed, ("celeba",), {"paths", "fid_rel_diff", "images_per_s", "targets"}),
    "input_pipeline": (args_input_pipeline, ("records",), {"images_per_s", "train_images_per_s", "ratio"}),
    "object_store": (args_object_store, ("celeba",), {"local_s", "bucket_s", "overhead", "traffic", "server_cpu_s",
                                                      "second_machine", "training_machine", "record_files_identical"}),
    "project": (args_project, ("run64", "records"), {"search", "encoder", "encoder+refine", "encoder_ms_p50"}),
    "quality": (args_quality, ("celeba", "features"), {"recipes", "winner", "fid", "fid_std", "kid", "prep_minutes",
                                                       "chosen_on", "reported_on", "winner_validation"}),
    "rebuild": (args_rebuild, (), {"full_s", "incremental_s", "noop_s", "incremental_ratio", "versions"}),
    "scale": (args_scale, ("celeba",), {"sample_s_per_image", "align_sample_s_per_image", "align_celeba_s_per_image",
                                        "records_celeba_s_per_image", "scheduler_ms_per_task", "load_avg_end"}),
    "serving_engines": (args_serving_engines, (), {"rows"}),
    "sharpness_norm": (args_sharpness_norm, ("records",), {"n", "spearman", "quantiles", "spread_ratio",
                                                           "blurred", "unsharp"}),
    "torch_peer": (args_torch_peer, (), {"torch", "threads", "images_per_s_fp32"}),
}
def _card(run_dir):
    """A trained run's model card."""
    from model.card import read_card
    return read_card(Path(run_dir))


def _card_meta(run_dir) -> dict:
    """The options a trained EGAN run's card records (what its flags reached)."""
    return _card(run_dir).input("c").meta


#: Checks beyond the keys: the rows a smoke run must have made.
ROWS = {
    # two shares x two discriminators, each evaluated at both steps, the claims judged or left open
    "capsnet": lambda r: (set(r["runs"]) == {"dcgan/cnn/0.5", "dcgan/cnn/1", "dcgan/capsnet/0.5", "dcgan/capsnet/1"}
                          and all(len(run["curve"]) == 2 and run["s_per_step"] > 0 for run in r["runs"].values())
                          and set(r["less_data"]["dcgan"]) == {"cnn", "capsnet"}
                          and r["overhead"]["dcgan"]["step_cost_ratio"] > 0
                          and set(r["claims"]) == {"less_data", "overhead"}),
    "complete": lambda r: {"net", "gan", "telea", "mean"} <= set(r["masks"]["center"]),
    # twice c's weight: the same mix at c = 0.5, so the ends move apart around it; sharpness and FID at each
    "egan_mix": lambda r: (set(r["scales"]) == {"1", "2"}
                           and all({"mix", "sharpness", "quality"} <= set(row) and row["quality"]["fid"] >= 0
                                   and [len(v) for v in row["diversity"].values()] == [3, 3]
                                   and "trained" in row["sharpness"] for row in r["scales"].values())
                           and abs((r["scales"]["2"]["mix"]["c1"] - r["scales"]["2"]["mix"]["c0"])
                                   - 2 * (r["scales"]["1"]["mix"]["c1"] - r["scales"]["1"]["mix"]["c0"])) < 0.05),
    # both c measured (c mixing in the blur as a feedback on the draft), with the parts of rho;
    # sharpness also in training's 12-norm, beside its targets
    "egan": lambda r: (set(r["rho"]) == {"brightness", "sharpness"} and "egan brightness+sharpness" in r["quality"]
                       and r["c_lowpass"] is True and r["c_lowpass_draft"] is True
                       and r["z_pairs"] is True and r["pair_weight"] == 3 and r["c_lowpass_only"] is True
                       and r["c_lowpass_fit"] is True
                       and all(_card_meta(r["runs"]["brightness+sharpness"])[k]
                               for k in ("c_lowpass_fit", "c_lowpass_split"))
                       and r["mode_seeking"] == 1 and _card_meta(r["runs"]["brightness+sharpness"])["mode_seeking"] == 1
                       and r["ema_raw_mix"] is True and _card_meta(r["runs"]["brightness+sharpness"])["ema_raw_mix"]
                       # an averaged run's sweep is also measured on its raw generator
                       and all({"rho", "parts"} <= set(r["control"][e]["raw_weights"]) for e in r["control"])
                       # the baseline trained with the recipe named, and what control costs against it
                       and r["baseline_recipe"] == "ema"
                       and _card(r["dcgan_run"]).training["ema"] == recipe("ema")["ema"]
                       and set(r["cost"]) == {"egan brightness+sharpness"}
                       and {len(v) for v in r["control"]["sharpness"]["edges_explain"].values()} == {11}
                       and "edges_explain" not in r["control"]["brightness"]
                       and all(set(r["control"][e]["parts"]) == {"slope", "slope_spread", "z_spread", "residual"}
                               for e in r["rho"])
                       and "trained" not in r["control"]["brightness"]
                       and r["control"]["sharpness"]["trained"]["sharpness_norm"] == 12
                       and len(r["control"]["sharpness"]["trained"]["targets"]) == 11
                       and r["control"]["sharpness"]["trained"]["targets"] == sorted(
                           r["control"]["sharpness"]["trained"]["targets"])),
    "fid_speed": lambda r: set(r["paths"]) == {"reference", "float32"},
    # chosen on validation (every recipe's figures and curve), the winner reported on test
    "quality": lambda r: (set(r["recipes"]) == {"paper"} and r["recipes"]["paper"]["steps"] == 2
                          and (r["chosen_on"], r["reported_on"], r["split"]) == ("validation", "test", "test")
                          and r["recipes"]["paper"]["split"] == r["winner_validation"]["split"] == "validation"
                          and r["recipes"]["paper"]["fid_over_steps_split"] == "validation"
                          and r["recipes"]["paper"]["fid_std"] > 0 and r["fid_std"] > 0),
    "rebuild": lambda r: r["versions"][0] != r["versions"][1],
    # the 4 train faces, each p against the formula; the 12-norm's levels are at or above the formula's;
    # blurred and unsharp-masked faces: their levels and how many rose or fell, in both measures
    "sharpness_norm": lambda r: (r["n"] == 4 and set(r["spearman"]) == {"1", "12"}
                                 and set(r["blurred"]) == {"1.5"} and 0 <= r["blurred"]["1.5"]["rises"] <= 1
                                 and len(r["blurred"]["1.5"]["quantiles"]) == 3
                                 and set(r["unsharp"]["0.5"]) == {"formula", "12"}
                                 and all(0 <= m["lowers"] + m["rises"] <= 1 for m in r["unsharp"]["0.5"].values())
                                 and all(a >= b - 1e-6 for a, b in zip(r["quantiles"]["12"],
                                                                       r["quantiles"]["formula"]))),
    "torch_peer": lambda r: r["images_per_s_fp32"] > 0 and (r["batch"], r["base_width"]) == (2, 4),
    # the bucket holds what a second machine needs: it runs nothing; the records equal the local run's
    "object_store": lambda r: (r["second_machine"]["ran"] == [] and r["record_files_identical"] > 0
                               and r["traffic"]["bytes_up"] > 0 and r["training_machine"]["again"]["bytes_down"] == 0),
    "scale": lambda r: r["align_celeba_images"] == FACES and set(r["scheduler_ms_per_task"]) == {"luigid", "local"},
}
#: Scripts with smoke tests elsewhere (multiworker: tests/test_multiworker.py; cifar10_npm:
#: tests/test_labeled_sources.py), and the shared module of the Luigi benchmarks.
ELSEWHERE = {"train_throughput", "studio", "luigi_bench", "multiworker", "cifar10_npm"}
TIMEOUT = 300  # seconds per benchmark, a hard limit (the process group is killed)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}


def test_every_bench_script_has_a_smoke_test():
    scripts = {path.stem for path in BENCH.glob("*.py")}
    assert scripts - ELSEWHERE == set(BENCHES), "add the new bench script to BENCHES (or ELSEWHERE)"


def run_script(runner: ScriptRunner, script: Path, args: list, cwd: Path,
               timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """``python script args`` in its own process group, killed whole after ``timeout`` s."""
    proc = runner.run([script, *args], cwd, ENV, timeout)
    if proc.returncode is None:
        pytest.fail(f"{script.name} did not finish within {timeout} s:\n{proc.stderr[-3000:]}")
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BENCHES))
def test_bench_script_runs_tiny_and_prints_its_json_line(name, request, zygote, tmp_path):
    make_args, needs, keys = BENCHES[name]
    data = {"tmp": tmp_path, **{fixture: request.getfixturevalue(fixture) for fixture in needs}}
    proc = run_script(zygote, BENCH / f"{name}.py", make_args(data), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, f"{name}.py printed nothing:\n{proc.stderr[-3000:]}"
    result = json.loads(lines[-1])
    assert isinstance(result, dict) and keys <= set(result), (sorted(result), keys)
    assert ROWS.get(name, lambda r: True)(result), result
