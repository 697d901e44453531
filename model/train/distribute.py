"""Training on several replicas (devices, machines) as one device trains on the global batch.

The loop (model/train/loop.py) runs under a ``tf.distribute`` strategy:
:func:`make_strategy` picks ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names a
cluster (one process per machine, TensorFlow's convention), ``MirroredStrategy`` over
several local GPUs (or logical CPUs), else the default strategy. ``batch_size`` is the
*global* batch under every strategy: each of the R replicas trains on ``batch_size / R``
examples of it, and a step on R replicas is the step one device makes on the whole batch
(to float rounding), because

* **data**: every worker reads the same seeded batches; ``AutoShardPolicy.DATA``
  (:func:`shard_by_batch_rows`) hands replica ``i`` rows ``[i n, (i + 1) n)`` of each
  global batch (n = batch_size / R). File sharding (the ``AUTO`` default) would give each
  worker other files, another data order than one device reads;
* **noise**: every random draw of the step (z, augmentation) is the draw one device makes
  for the global batch, of which each replica keeps its rows (:class:`GlobalBatchDraws`),
  so the noise stream and its checkpointed state do not depend on R;
* **batch norm** normalises over the global batch (``synchronized``; model/nets/norms.py),
  as one device does, and its moving statistics stay equal on every replica;
* **losses** are averaged over the global batch and gradients summed over the replicas
  (model/variants/losses.py, Keras' optimizer).

With one replica none of this is used: the default strategy's step is unchanged.

Only the chief (task ``chief``, else ``worker`` 0: :func:`is_chief`) writes the run folder.
Another worker runs the same loop into a temporary folder of its own (checkpoints, logs,
grids: TensorFlow's convention, so every worker takes the same steps) and deletes it;
it exports nothing. :func:`broadcast_from_chief` starts every worker from the chief's
state (the checkpoint it resumed from), so a resumed multi-worker run needs the run folder
on the chief only.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import keras
import tensorflow as tf


def make_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy under TF_CONFIG, MirroredStrategy over several
    visible GPUs (or several logical CPUs), else the default strategy.

    TensorFlow makes the multi-worker strategy only before anything else ran in the process
    (it configures the collective ops), and only once: call this first, before building the
    input pipeline; a second call returns the same strategy."""
    global _cluster_strategy
    if os.environ.get("TF_CONFIG"):
        if _cluster_strategy is None:
            try:
                _cluster_strategy = tf.distribute.MultiWorkerMirroredStrategy()
            except RuntimeError as e:
                if "program startup" not in str(e):
                    raise
                raise RuntimeError("TF_CONFIG is set, but TensorFlow already ran in this process: the "
                                   "multi-worker strategy must be made first (model.train.distribute."
                                   "make_strategy() before any dataset or model; run training in a "
                                   "process of its own)") from None
        return _cluster_strategy
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    cpus = tf.config.list_logical_devices("CPU")
    if not gpus and len(cpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in cpus])
    return tf.distribute.get_strategy()


#: The process's multi-worker strategy, once made (TensorFlow allows one).
_cluster_strategy: tf.distribute.Strategy | None = None


# -- who is who (TF_CONFIG) ------------------------------------------------------------------------

def _tf_config(tf_config: str | None = None) -> dict:
    text = os.environ.get("TF_CONFIG", "") if tf_config is None else tf_config
    if not text.strip():
        return {}
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not JSON ({e}); e.g. "
                         '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                         '"task": {"type": "worker", "index": 0}}') from None
    return config if isinstance(config, dict) else {}


def is_chief(tf_config: str | None = None) -> bool:
    """Whether this process writes the run folder: no cluster in ``TF_CONFIG`` (one machine),
    the ``chief`` task, or ``worker`` 0 of a cluster without a chief (TensorFlow's rule)."""
    config = _tf_config(tf_config)
    cluster, task = config.get("cluster") or {}, config.get("task") or {}
    if not cluster:
        return True
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and "chief" not in cluster


def num_workers(tf_config: str | None = None) -> int:
    """The training processes ``TF_CONFIG``'s cluster names (chief and workers; 1 without one)."""
    cluster = _tf_config(tf_config).get("cluster") or {}
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
        strategy.extended._num_workers > 1  # noqa: SLF001  (no public count of workers)


@contextmanager
def writable_run_dir(run_dir: str | os.PathLike, chief: bool):
    """The folder this process writes the run into: ``run_dir`` on the chief; elsewhere a new
    temporary folder, deleted when the block ends (however it ends)."""
    if chief:
        yield Path(run_dir)
        return
    scratch = Path(tempfile.mkdtemp(prefix="facegan-worker-"))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- data, noise, state ----------------------------------------------------------------------------

def check_global_batch(batch_size: int, replicas: int) -> None:
    """A clear error unless the global batch splits evenly over the replicas."""
    if replicas > 1 and batch_size % replicas:
        raise ValueError(f"batch_size = {batch_size} is the global batch; it must split evenly over the "
                         f"{replicas} replicas (e.g. --batch-size {batch_size - batch_size % replicas or replicas})")


def shard_by_batch_rows(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` of global batches with ``AutoShardPolicy.DATA`` (unless the caller chose a
    policy): under ``experimental_distribute_dataset`` every worker reads the same batches
    and replica ``i`` keeps rows ``[i n, (i + 1) n)`` of each."""
    if dataset.options().experimental_distribute.auto_shard_policy != tf.data.experimental.AutoShardPolicy.AUTO:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def shared_generator(seed: int, strategy: tf.distribute.Strategy) -> tf.random.Generator:
    """The ``tf.random.Generator.from_seed(seed)`` stream with its state a variable of
    ``strategy`` (mirrored, checkpointed as one), drawing the same numbers on every replica.

    A generator made inside a strategy's scope mixes the replica id into its key, so that
    replicas draw different numbers; this one is made outside the scope, around the state
    made inside it, and does not (:class:`GlobalBatchDraws` needs that). Call it outside
    ``strategy.scope()``; draw from it in replica context only."""
    if tf.distribute.has_strategy():
        raise RuntimeError("shared_generator is made outside a strategy's scope")
    alg = tf.random.Algorithm.PHILOX
    with strategy.scope(), tf.name_scope("random_generator"):  # the name tf.random.Generator gives it
        state = tf.Variable(tf.random.create_rng_state(seed, alg), dtype=tf.int64, trainable=False,
                            name="StateVar")
    return tf.random.Generator(state=state, alg=alg)


class GlobalBatchDraws:
    """A :func:`shared_generator` seen from one of ``replicas`` replicas: each draw of shape
    ``(n, ...)`` (n = this replica's batch) is the draw of ``(replicas * n, ...)`` one device
    makes for the global batch, of which replica ``i`` keeps rows ``[i n, (i + 1) n)``.
    Every replica advances the stream by the whole draw, so its state stays the one-device
    state. The variants draw through ``uniform`` and ``normal`` (model/variants/base.py,
    model/train/augment.py), always with the batch first."""

    def __init__(self, generator: tf.random.Generator, replicas: int):
        self.generator, self.replicas = generator, replicas

    @property
    def state(self):
        return self.generator.state

    def uniform(self, shape, minval=0, maxval=None, dtype=tf.float32):
        return self._mine(shape, lambda s: self.generator.uniform(s, minval, maxval, dtype=dtype))

    def normal(self, shape, mean=0.0, stddev=1.0, dtype=tf.float32):
        return self._mine(shape, lambda s: self.generator.normal(s, mean, stddev, dtype=dtype))

    def _mine(self, shape, draw):
        shape = list(shape)
        n = shape[0]
        full = draw([n * self.replicas, *shape[1:]])
        i = tf.distribute.get_replica_context().replica_id_in_sync_group
        return full[i * n:(i + 1) * n]


def checkpoint_variables(checkpoint: tf.train.Checkpoint) -> list[tf.Variable]:
    """Every variable ``checkpoint`` saves (networks, optimizer slots, step, noise state, EMA),
    once each, in a fixed order."""
    checkpoint.save_counter  # noqa: B018  (made on first save or restore: here, on every worker alike)
    seen, out = set(), []
    for obj in tf.train.TrackableView(checkpoint).descendants():
        value = obj.value if isinstance(obj, keras.Variable) else obj
        if isinstance(value, tf.Variable) and id(value) not in seen:
            seen.add(id(value))
            out.append(value)
    return out


def broadcast_from_chief(strategy: tf.distribute.Strategy, checkpoint: tf.train.Checkpoint) -> None:
    """Give every worker the chief's values of everything ``checkpoint`` holds (exactly: the
    others add zeros). Call on every worker at the same point; a no-op on one machine."""
    if not is_multi_worker(strategy):
        return
    variables = checkpoint_variables(checkpoint)

    groups: dict[tf.DType, list[tf.Variable]] = {}
    for v in variables:  # one all-reduce per dtype (it concatenates what it sums)
        groups.setdefault(v.dtype, []).append(v)

    def chief_values():
        ctx = tf.distribute.get_replica_context()
        mine = tf.equal(ctx.replica_id_in_sync_group, 0)  # replica 0 is the chief's first
        return [ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                               [tf.where(mine, v.read_value(), tf.zeros_like(v)) for v in group])
                for group in groups.values()]

    def broadcast():
        return strategy.run(chief_values)

    values = tf.function(broadcast, autograph=False)()
    for group, sums in zip(groups.values(), values):
        for variable, value in zip(group, sums):
            variable.assign(strategy.experimental_local_results(value)[0])


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Return when every worker has come here (a no-op on one machine)."""
    if not is_multi_worker(strategy):
        return

    def everyone():
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(_one), axis=None)

    tf.function(everyone, autograph=False)()


def _one() -> tf.Tensor:
    return tf.constant(1.0)
