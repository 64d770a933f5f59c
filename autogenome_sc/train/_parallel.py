"""Data parallel training: each minibatch split across devices by a ``jax.sharding`` Mesh.

The training state (parameters, batch-norm statistics, optimizer state) is replicated on
every device; the minibatches of a chunk ``[K, B, G]`` are split along ``B``. The compiled
step is unchanged: XLA's SPMD partitioner inserts the all-reduce of the gradients and of
the batch-norm means (so batch norm sees the whole batch, as on one device). With one
device nothing changes. Arrays are built with ``jax.make_array_from_callback``, which also
works with several processes (``jax.distributed.initialize``): every process prepares the
same chunk and hands each of its devices its slice.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .. import _logging as logg

AXIS = "batch"


def batch_mesh(enabled: bool, batch_size: int) -> tuple[Mesh | None, int]:
    """The mesh over all devices (or ``None`` for one device) and the batch size to use.

    The batch is rounded down to a multiple of the device count, so every device gets an
    equal share.
    """
    devices = jax.devices()
    if not enabled or len(devices) < 2:
        return None, batch_size
    n = len(devices)
    if batch_size < n:
        return None, batch_size
    if batch_size % n:
        logg.info(f"batch size {batch_size} rounded down to {batch_size - batch_size % n}, a multiple of {n} devices")
        batch_size -= batch_size % n
    logg.info(f"data parallel: each minibatch of {batch_size} split across {n} {devices[0].platform} devices")
    return Mesh(np.asarray(devices), (AXIS,)), batch_size


def shard(x: np.ndarray | jax.Array, mesh: Mesh | None, batch_axis: int | None) -> jax.Array:
    """``x`` on the device(s): split along ``batch_axis``, or replicated when it is ``None``.

    A device array (a chunk prepared on the device) is moved between devices, not through the
    host, when this process sees every device of ``mesh``.
    """
    if mesh is None:
        return jnp.asarray(x)
    spec = PartitionSpec() if batch_axis is None else PartitionSpec(*([None] * batch_axis), AXIS)
    if isinstance(x, jax.Array) and jax.process_count() == 1:
        return jax.device_put(x, NamedSharding(mesh, spec))
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, NamedSharding(mesh, spec), lambda index: x[index])


def replicate(tree, mesh: Mesh | None):
    """A pytree (the training state) copied to every device of ``mesh``."""
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda a: jax.device_put(a, sharding), tree)
