"""tf.distribute for a training run: TF_CONFIG checked up front, the strategy of
``--strategy``, and data sharding for multi-worker runs."""

from __future__ import annotations

import functools
import json

from uniq_tf._keras import tf

MULTI_WORKER_TASK_TYPES = ("chief", "worker")


_TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}'
)


def parse_tf_config(text: str | None) -> tuple[dict[str, list[str]], str, int]:
    """Checks a TF_CONFIG for MultiWorkerMirroredStrategy, as TensorFlow documents it:
    ``{"cluster": {"worker": ["host:port", ...], "chief": ["host:port"]}, "task": {"type":
    "worker", "index": i}}`` ("chief" optional). Returns (cluster, task type, task index);
    ValueError saying what is wrong, so that a worker never starts with a cluster it cannot
    join (it would wait for the others forever)."""
    if not text:
        raise ValueError(
            "--strategy=multi_worker needs the TF_CONFIG environment variable, set on every "
            f"worker with its own task, e.g. TF_CONFIG='{_TF_CONFIG_EXAMPLE}'"
        )
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}): {text!r}") from error
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(
            'TF_CONFIG has no "cluster" (a dict of task type -> list of "host:port"): '
            f"{text!r}; expected e.g. {_TF_CONFIG_EXAMPLE}"
        )
    unknown = sorted(set(cluster) - set(MULTI_WORKER_TASK_TYPES))
    if unknown:
        raise ValueError(
            f"TF_CONFIG cluster has task types {unknown}; MultiWorkerMirroredStrategy allows "
            f"{list(MULTI_WORKER_TASK_TYPES)} (parameter servers and evaluators belong to "
            "other strategies)"
        )
    addresses = []
    for task_type, hosts in cluster.items():
        if not isinstance(hosts, list) or not hosts:
            raise ValueError(
                f'TF_CONFIG cluster["{task_type}"] must be a non-empty list of "host:port", '
                f"got {hosts!r}"
            )
        for host in hosts:
            name, _, port = host.rpartition(":") if isinstance(host, str) else ("", "", "")
            if not name or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(
                    f'TF_CONFIG cluster["{task_type}"] has {host!r}, which is not "host:port" '
                    "(port 1..65535)"
                )
        addresses.extend(hosts)
    if len(cluster.get("chief", [])) > 1:
        raise ValueError(f'TF_CONFIG cluster has {len(cluster["chief"])} "chief" tasks; at most 1')
    repeated = sorted({a for a in addresses if addresses.count(a) > 1})
    if repeated:
        raise ValueError(f"TF_CONFIG cluster lists {repeated} more than once")
    task = spec.get("task")
    if not isinstance(task, dict) or "type" not in task:
        raise ValueError(
            'TF_CONFIG has no "task" saying which task this process is, e.g. '
            '"task": {"type": "worker", "index": 0}'
        )
    task_type, index = task["type"], task.get("index", 0)
    if task_type not in cluster:
        raise ValueError(
            f"TF_CONFIG task type {task_type!r} is not in the cluster, whose task types are "
            f"{sorted(cluster)}"
        )
    if isinstance(index, bool) or not isinstance(index, int):
        raise ValueError(f"TF_CONFIG task index must be an integer, got {index!r}")
    if not 0 <= index < len(cluster[task_type]):
        raise ValueError(
            f"TF_CONFIG task index {index} is out of range: the cluster has "
            f"{len(cluster[task_type])} {task_type!r} task(s), indices "
            f"0..{len(cluster[task_type]) - 1}"
        )
    return cluster, task_type, index


def make_strategy(config) -> tf.distribute.Strategy:
    """The tf.distribute strategy of ``config.strategy`` (a TrainConfig's; TF_CONFIG already
    checked). This module does not import the config module, which imports it."""
    if config.strategy == "mirrored":
        return _mirrored_strategy()
    if config.strategy == "multi_worker":
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as error:  # TensorFlow's runtime already started in this process
            raise RuntimeError(
                "MultiWorkerMirroredStrategy must be created before TensorFlow runs anything "
                "in the process: run uniq-train --strategy=multi_worker as a process "
                f"of its own ({error})"
            ) from error
    return tf.distribute.get_strategy()


@functools.cache
def _mirrored_strategy() -> tf.distribute.MirroredStrategy:
    """One per process: a second MirroredStrategy numbers its collective ops from the start
    again, and TensorFlow matches them with the first one's (shape mismatch errors)."""
    return tf.distribute.MirroredStrategy()



def shard_by_data(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Every worker reads the whole pipeline and keeps its part of each global batch, so all
    workers take the same number of steps (file sharding gives each its own file count)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)
