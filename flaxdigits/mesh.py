"""Where training runs: a 1-D data-parallel mesh over local devices, and its description."""

from __future__ import annotations

import platform

import jax
import numpy as np


def make_mesh(devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D "data" mesh over the first `devices` local devices (None: all of them)."""
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


def all_cpu(mesh: jax.sharding.Mesh) -> bool:
    """Whether every device of the mesh is a CPU."""
    return all(d.platform == "cpu" for d in mesh.devices.flat)


def device_description() -> str:
    """E.g. 'cpu (x86_64, 2 devices)' or 'gpu (NVIDIA H100 80GB HBM3, 1 device)'."""
    devices = jax.local_devices()
    kind = devices[0].device_kind if devices[0].platform != "cpu" else platform.machine()
    n = len(devices)
    return f"{devices[0].platform} ({kind}, {n} device{'s' if n > 1 else ''})"
