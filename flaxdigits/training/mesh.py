"""Where training runs: a 1-D data-parallel mesh over the job's devices, and its description.

In a jax.distributed job the mesh spans every process's devices; a replicated array then lives
on devices this process cannot address, so the host reads its own copy (fetch, local_copy).
"""

from __future__ import annotations

import platform

import jax
import numpy as np


def make_mesh(devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D "data" mesh over the first `devices` local devices (None: all of them), or over
    every device of every process in a jax.distributed job."""
    if jax.process_count() > 1:
        if devices is not None and devices != jax.device_count():
            raise ValueError(
                f"--devices {devices}: a {jax.process_count()}-process job trains on all "
                f"{jax.device_count()} devices of its processes"
            )
        return jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
    available = jax.local_devices()
    n = len(available) if devices is None else devices
    if not 1 <= n <= len(available):
        raise ValueError(f"--devices {n}: this host has {len(available)} local device(s)")
    return jax.sharding.Mesh(np.asarray(available[:n]), ("data",))


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
    """Whole arrays on every mesh device."""
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def batch_sharded(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
    """The leading (batch) axis split over the mesh's "data" axis."""
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))


def fetch(x: jax.Array) -> np.ndarray:
    """A replicated array's value on the host, read from this process's own copy."""
    return np.asarray(x.addressable_data(0))


def local_copy(tree):
    """Each replicated array of tree as its copy on this process's first device: evaluation
    runs on it, with no collective across processes."""
    return jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, tree)


def all_cpu(mesh: jax.sharding.Mesh) -> bool:
    """Whether every device of the mesh is a CPU."""
    return all(d.platform == "cpu" for d in mesh.devices.flat)


def device_description() -> str:
    """E.g. 'cpu (x86_64, 2 devices)' or 'gpu (NVIDIA H100 80GB HBM3, 1 device)'."""
    devices = jax.local_devices()
    kind = devices[0].device_kind if devices[0].platform != "cpu" else platform.machine()
    n = len(devices)
    text = f"{devices[0].platform} ({kind}, {n} device{'s' if n > 1 else ''}"
    if jax.process_count() > 1:
        text += f" per process, {jax.process_count()} processes"
    return text + ")"
