"""TrainDCGAN on two machines (MultiWorkerMirroredStrategy, TF_CONFIG), played by two processes
on 127.0.0.1: both workers end with the same weights, only the chief writes the run folder,
and the run is the one-worker run with the same (global) batch, to float rounding.

Each process is a "machine" with its own raw/ and processed/ folders (copies of records the
test builds once) and its own temporary folder, and runs the command a user types,
``luigi --module tasks TrainDCGAN --local-scheduler ...``, through ``luigi.cmdline`` behind a
small spy that keeps the trainer, so that the test can read every worker's final state
(a worker other than the chief writes nothing it could be read from). Hard timeouts: every
process runs in a session of its own and its whole process group is killed at the end. The
processes are forked from one that imported TensorFlow once (tests/script_runner.py): what
is tested is how they train, not how they start.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from luigi_bench import free_ports  # noqa: E402
from script_runner import Child, ScriptRunner  # noqa: E402

#: Seconds for building the records, and for the three training processes together (2 cores).
BUILD_TIMEOUT, TRAIN_TIMEOUT = 600, 600
#: The sample data set the test builds once (two public-domain portraits, varied).
SAMPLE = ["--Sample-n", "16"]
#: TrainDCGAN's default recipe (ema 0.999, augment translation,cutout,color) at a small width,
#: in float32, for 4 steps of the global batch 8 (4 per worker on two workers).
TRAIN = ["--TrainDCGAN-steps", "4", "--TrainDCGAN-batch-size", "8", "--TrainDCGAN-base-width", "8",
         "--TrainDCGAN-precision", "float32", "--TrainDCGAN-checkpoint-every", "2",
         "--TrainDCGAN-sample-every", "2", "--TrainDCGAN-log-every", "1"]

#: One "machine": the luigi command line behind a spy that saves the trainer's final state
#: (generator weights, their moving average, step, noise state) to argv[1].
DRIVER = """
import sys
import numpy as np
import model.train.loop as loop
from luigi.cmdline import luigi_run

made = []
init = loop.GANTrainer.__init__
def keep(self, *args, **kwargs):
    init(self, *args, **kwargs)
    made.append(self)
loop.GANTrainer.__init__ = keep
try:
    luigi_run(sys.argv[2:])
except SystemExit as e:
    code = e.code
else:
    code = 0
if made:
    t = made[-1]
    np.savez(sys.argv[1], **{f"weight{i}": w.numpy() for i, w in enumerate(t.generator.weights)},
             **{f"average{i}": a for i, a in enumerate(t.ema.values())}, step=t.step.numpy(),
             rng=t.rng.state.numpy())
sys.exit(code)
"""


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def luigi_args(machine: Path, task: str, *args: str) -> list[str]:
    return ["--module", "tasks", task, "--local-scheduler", "--paths-raw", str(machine / "raw"),
            "--paths-processed", str(machine / "processed"), *SAMPLE, *args]


def start(runner: ScriptRunner, argv: list[str], machine: Path, env: dict) -> Child:
    """``python *argv`` as one machine: its own temporary folder and log (stderr in it), no
    TF_CONFIG unless ``env`` sets one; forked from the pytest worker's zygote (a new session)."""
    (machine / "tmp").mkdir(parents=True, exist_ok=True)
    env = {**{k: v for k, v in os.environ.items() if k != "TF_CONFIG"}, "PYTHONPATH": str(ROOT),
           "TMPDIR": str(machine / "tmp"), **env}
    return runner.start(argv, ROOT, env, machine / "log.txt")


def finish(procs: dict[str, Child], timeout: float) -> None:
    """Wait for every process until the deadline; then (and whatever happens) kill their groups."""
    deadline = time.monotonic() + timeout
    try:
        for proc in procs.values():
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def tail(machine: Path, n: int = 4000) -> str:
    return (machine / "log.txt").read_text()[-n:]


def test_who_writes_the_run_folder_follows_tensorflows_rule():
    from model.train.distribute import is_chief, num_workers

    two = {"worker": ["a:1", "b:1"]}
    assert is_chief("") and num_workers("") == 1  # one machine
    assert is_chief(json.dumps({"cluster": two, "task": {"type": "worker", "index": 0}}))
    assert not is_chief(json.dumps({"cluster": two, "task": {"type": "worker", "index": 1}}))
    with_chief = {"chief": ["c:1"], **two}
    assert is_chief(json.dumps({"cluster": with_chief, "task": {"type": "chief", "index": 0}}))
    assert not is_chief(json.dumps({"cluster": with_chief, "task": {"type": "worker", "index": 0}}))
    assert num_workers(json.dumps({"cluster": with_chief})) == 3
    with pytest.raises(ValueError, match="TF_CONFIG is not JSON"):
        is_chief("{cluster")


def test_another_worker_trains_into_a_scratch_folder_it_deletes(tmp_path):
    from model.train.distribute import check_global_batch, writable_run_dir

    with writable_run_dir(tmp_path / "run", chief=True) as folder:
        assert folder == tmp_path / "run"
    with pytest.raises(RuntimeError, match="stop"), writable_run_dir(tmp_path / "run", chief=False) as folder:
        assert folder != tmp_path / "run" and folder.is_dir()
        (folder / "ckpt").mkdir()
        raise RuntimeError("stop")
    assert not folder.exists() and not (tmp_path / "run").exists()
    check_global_batch(8, 2)
    with pytest.raises(ValueError, match="batch_size = 9 is the global batch; .* 2 replicas .*--batch-size 8"):
        check_global_batch(9, 2)


def test_a_training_budget_is_refused_with_several_workers(monkeypatch, tmp_path):
    """Each worker would time its own steps and choose its own step count: refused, before
    anything is built or written."""
    import model.train.loop as loop

    monkeypatch.setattr(loop, "is_multi_worker", lambda strategy: True)
    with pytest.raises(ValueError, match="max_minutes = 1.0 with several workers .*set --steps instead"):
        loop.train(loop.TrainConfig(max_minutes=1.0), None, tmp_path / "run")
    assert not (tmp_path / "run").exists()


#: In a process of its own (two logical CPUs must be set before TensorFlow starts): 3 steps of
#: the default recipe on one device and under MirroredStrategy over two, from the same weights.
TWO_DEVICES = """
import json, sys
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from model.train.loop import GANTrainer, TrainConfig, make_strategy
config = TrainConfig(base_width=8, batch_size=8, seed=1, precision="float32", ema=0.999,
                     augment="translation,cutout,color", resolution=32)
images = np.random.default_rng(0).uniform(-1, 1, (24, 32, 32, 3)).astype("float32")
two = make_strategy()
assert two.num_replicas_in_sync == 2, two
out = {}
for name, strategy in (("one", tf.distribute.get_strategy()), ("two", two)):
    trainer = GANTrainer(config, strategy)
    batches = tf.data.Dataset.from_tensor_slices(images).batch(8)
    for batch in strategy.experimental_distribute_dataset(batches):
        trainer.train_step(batch)
    for i, w in enumerate(trainer.generator.weights + trainer.discriminator.weights):
        out[f"{name}/weight{i}"] = w.numpy()
    for i, a in enumerate(trainer.ema.values()):
        out[f"{name}/average{i}"] = a
    out[f"{name}/rng"] = trainer.rng.state.numpy()
np.savez(sys.argv[1], **out)
"""


@pytest.mark.slow
def test_two_replicas_take_the_step_one_device_takes_on_the_global_batch(zygote, tmp_path):
    """MirroredStrategy over two logical CPUs, the same machinery as two workers (rows of the
    global batch per replica, synchronized batch norm, the one-device noise), in one process,
    with the EMA and every augmentation: in float32 the two replicas train what one device
    trains (so the figures are global means and each replica augments its own rows with the
    global batch's draws). At 32x32: the matmul-route layers are there, at a quarter of the cost."""
    proc = zygote.run(["-c", TWO_DEVICES, tmp_path / "out.npz"], ROOT, {**os.environ, "PYTHONPATH": str(ROOT)},
                      timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = np.load(tmp_path / "out.npz")
    one = {k.split("/")[1]: saved[k] for k in saved.files if k.startswith("one/")}
    two = {k.split("/")[1]: saved[k] for k in saved.files if k.startswith("two/")}
    assert np.array_equal(one.pop("rng"), two.pop("rng"))
    assert_same_training(two, one)


@pytest.fixture(scope="module")
def records(zygote, tmp_path_factory) -> Path:
    """A machine folder (raw/, processed/) holding the sample records, built once."""
    machine = tmp_path_factory.mktemp("records")
    procs = {"build": start(zygote, ["-m", "luigi", *luigi_args(machine, "BuildTFRecords")], machine, {})}
    finish(procs, BUILD_TIMEOUT)
    assert procs["build"].returncode == 0, tail(machine)
    return machine


def machine_with_records(records: Path, machine: Path) -> Path:
    for part in ("raw", "processed"):
        shutil.copytree(records / part, machine / part)
    return machine


def assert_same_training(a: dict, b: dict, lr: float = 2e-4) -> None:
    """The weights (and averages) in ``a`` are those in ``b`` (same keys) to float rounding.

    Two replicas sum the batch statistics and the gradients in another order than one device,
    a relative change of about 1e-7. Adam divides each gradient by its running size, so for the
    few weights whose gradient almost cancels (a sum of terms of both signs) the rounding moves
    the step itself, by at most about a step (lr = 2e-4). Measured on this test's data after 4
    steps: 98 of about 146,000 values more than 1e-5 apart (0.07%), at most 4.8e-5. Runs that
    are not the one-device run fail both bounds by far: per-replica batch statistics, or noise
    drawn per replica, put 97-99% of the values more than 1e-5 apart, the median 2e-4 to
    4e-4, the largest 5e-3 to 8e-3 (measured with the loop's fixes switched off)."""
    keys = [k for k in b if k not in ("step", "rng")]
    apart = np.concatenate([np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)).ravel() for k in keys])
    share = float((apart > 1e-5).mean())
    assert share < 0.01 and apart.max() < lr, (f"{share:.2%} of the values more than 1e-5 apart, at most "
                                               f"{apart.max():.2e} (median {np.median(apart):.1e})")


def train_on(runner: ScriptRunner, machines: dict[str, Path], tf_configs: dict[str, str | None],
             args: dict[str, list[str]] | None = None) -> None:
    """TrainDCGAN (``TRAIN``, then that machine's ``args``) on each machine named in ``tf_configs``
    at once, with that ``TF_CONFIG`` (None: unset); each saves its trainer's final state to
    ``state.npz``. Every one must exit 0."""
    procs = {}
    try:
        for name, config in tf_configs.items():
            machine = machines[name]
            cmd = ["-c", DRIVER, str(machine / "state.npz"),
                   *luigi_args(machine, "TrainDCGAN", *TRAIN, *(args or {}).get(name, []))]
            procs[name] = start(runner, cmd, machine, {"TF_CONFIG": config} if config else {})
    finally:
        finish(procs, TRAIN_TIMEOUT)
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{tail(machines[name])}"


def runs(machine: Path) -> list[Path]:
    return sorted((machine / "processed" / "models" / "sample").glob("dcgan-*"))


@pytest.fixture(scope="module")
def single(zygote, records, tmp_path_factory) -> Path:
    """The one-worker run of ``TRAIN`` (global batch 8, 4 steps) both two-worker tests compare
    with: a machine folder with its run and ``state.npz``, trained once."""
    machine = machine_with_records(records, tmp_path_factory.mktemp("single") / "single")
    train_on(zygote, {"single": machine}, {"single": None})
    return machine


@pytest.mark.slow
def test_two_workers_resume_from_the_chiefs_checkpoint_alone(zygote, records, single, tmp_path):
    """A two-worker run stopped after step 2 and started again: the chief resumes from the
    checkpoint in its run folder, the other worker (which kept nothing) takes the chief's state,
    and the run ends where the uninterrupted one-worker run ends."""
    import csv

    from model.train.loop import continue_run

    machines = {name: machine_with_records(records, tmp_path / name) for name in ("chief", "worker")}
    machines["single"] = single
    # Beside the uninterrupted one-worker run of 4 steps, on the chief a run of 2 steps: what a
    # run stopped at step 2 leaves behind (a checkpoint and metrics of 2 steps), copied below
    # into the folder of the 4-step run.
    train_on(zygote, machines, {"chief": None}, {"chief": ["--TrainDCGAN-steps", "2"]})
    (single_run,) = runs(machines["single"])
    (short,) = runs(machines["chief"])
    run = short.parent / single_run.name
    assert continue_run(short, run) == 2

    ports = free_ports(2)
    train_on(zygote, machines, {"chief": tf_config(ports, 0), "worker": tf_config(ports, 1)})
    chief, worker, single = (dict(np.load(machines[n] / "state.npz")) for n in ("chief", "worker", "single"))
    assert int(chief["step"]) == int(worker["step"]) == 4
    for key in chief:
        assert np.array_equal(chief[key], worker[key]), key
    assert np.array_equal(chief["rng"], single["rng"])
    assert_same_training(chief, single)
    assert [int(r["step"]) for r in csv.DictReader(open(run / "metrics.csv"))] == [1, 2, 3, 4]

    # Only the chief wrote the run folder (beside the 2-step run); the other worker's scratch folder is gone.
    assert runs(machines["chief"]) == sorted([short, run])
    assert not (machines["worker"] / "processed" / "models").exists()
    assert not list((machines["worker"] / "tmp").glob("facegan-worker-*"))
    for name in ("generator.keras", "model_card.json", "saved_model", "ckpt", "metrics.csv", "tb",
                 "progress/step-0000004.png", "lineage.json", "result.json"):
        assert (run / name).exists(), name
    result = json.loads((run / "result.json").read_text())
    assert result["replicas"] == 2 and result["step"] == 4
    assert json.loads((single_run / "result.json").read_text())["replicas"] == 1
    card = json.loads((run / "model_card.json").read_text())
    assert card["steps"] == 4 and card["training"]["batch_size"] == 8

    # The exported generator is the chief's moving average, close to the one-worker export.
    import keras
    exported = keras.models.load_model(run / "generator.keras", compile=False).get_weights()
    alone = keras.models.load_model(single_run / "generator.keras", compile=False).get_weights()
    averages = [chief[f"average{i}"] for i in range(sum(k.startswith("average") for k in chief))]
    assert len(exported) == len(averages)
    for mine, average in zip(exported, averages):
        np.testing.assert_array_equal(mine, average)
    assert_same_training(dict(enumerate(exported)), dict(enumerate(alone)))


@pytest.mark.slow
def test_bench_multiworker_runs_tiny_and_prints_its_json_line(zygote, tmp_path):
    """bench/multiworker.py (docs/training.md's step times) at a smoke-test size."""
    argv = [ROOT / "bench" / "multiworker.py", "--batch", "4", "--base-width", "8", "--precision", "float32",
            "--warmup", "1", "--timed", "1", "--rounds", "1", "--alternations", "1"]
    proc = zygote.run(argv, tmp_path, {**os.environ, "PYTHONPATH": str(ROOT)}, timeout=TRAIN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"one_worker_s", "two_workers_s", "ratio", "images_per_s", "load_avg_end"} <= set(result)
    assert result["one_worker_s"] > 0 and result["two_workers_s"] > 0


@pytest.mark.slow
def test_two_workers_train_from_a_bucket_as_one_worker_and_only_the_chief_uploads(zygote, single, tmp_path):
    """The two workers as two machines that share only a bucket (moto's S3 server on
    127.0.0.1; [paths] in it, each machine its own cache), from step 0: both pull the records
    and train the same bits, which are the one-worker run's with the same global batch (8) to
    float rounding, and the run folder (the one-worker run's version) reaches the bucket from
    the chief alone, marked done."""
    import s3_server
    from components import require_module
    require_module("moto")
    require_module("s3fs")
    server, s3 = s3_server.start()
    try:
        bucket = s3.bucket("runs")
        env = s3_server.luigi_env()
        built = s3_server.luigi(["BuildTFRecords", "--local-scheduler", *SAMPLE,
                                 *s3_server.bucket_paths(s3, bucket, tmp_path / "builder")], env, timeout=BUILD_TIMEOUT)
        assert built.returncode == 0, built.stderr[-3000:]
        ports = free_ports(2)
        procs = {}
        try:
            for index, name in enumerate(("chief", "worker")):
                machine = tmp_path / name
                cmd = ["-c", DRIVER, str(machine / "state.npz"), "--module", "tasks", "TrainDCGAN",
                       "--local-scheduler", *SAMPLE, *TRAIN, *s3_server.bucket_paths(s3, bucket, machine / "cache")]
                procs[name] = start(zygote, cmd, machine,
                                    {**s3_server.CREDENTIALS, "TF_CONFIG": tf_config(ports, index)})
        finally:
            finish(procs, TRAIN_TIMEOUT)
        for name, proc in procs.items():
            assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{tail(tmp_path / name)}"
        chief, worker = (dict(np.load(tmp_path / n / "state.npz")) for n in ("chief", "worker"))
        alone = dict(np.load(single / "state.npz"))
        assert int(chief["step"]) == int(worker["step"]) == int(alone["step"]) == 4
        for key in chief:  # both workers hold the same bits: weights, their average, the noise state
            assert np.array_equal(chief[key], worker[key]), key
        # The noise stream is the one-worker stream (every replica drew the global batch's noise).
        assert np.array_equal(chief["rng"], alone["rng"])
        assert_same_training(chief, alone)
        keys = s3.keys(bucket, "data/processed/models/sample/")
        (card,) = [k for k in keys if k.endswith("/model_card.json")]
        run = card.rsplit("/", 1)[0]
        (single_run,) = runs(single)
        assert run.rsplit("/", 1)[1] == single_run.name  # the same run as the one-worker run
        assert {f"{run}/_MANIFEST.json", f"{run}/generator.keras", f"{run}/saved_model/_MANIFEST.json"} <= set(keys)
        assert "pushed 0 files" in tail(tmp_path / "worker", 100000)  # the other worker uploaded nothing
        assert not list((tmp_path / "worker" / "cache").rglob("model_card.json"))
    finally:
        server.stop()
