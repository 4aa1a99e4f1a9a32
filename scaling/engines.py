"""Engines: how one BoloGAN step becomes data-parallel. The step itself is bologan.step's.

- ``SingleEngine``: one process, one replica.
- ``HorovodEngine``: one replica per process; gradients reduced by Horovod's
  ``DistributedGradientTape`` (its own all-reduce, timed around that call); variables and
  optimiser state broadcast from rank 0.
- ``MirroredEngine``: tf.distribute. One process: ``MirroredStrategy`` over the local GPUs (or
  ``cpu_replicas`` logical CPU devices). Several processes: ``MultiWorkerMirroredStrategy``, one
  worker per process, cluster spec built from the launcher (each worker its own port, because
  emulated nodes share one hostname).

Every engine must be set up before TensorFlow runs its first op.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable


from bologan.step import Replicas, timed
from common.vocab import ENGINE_HOROVOD, ENGINE_MIRRORED, MODE_ENSEMBLE
from scaling.collectives import LocalCollectives
from scaling.config import ScalingConfig
from scaling.devices import Pinned, pin_rank, worker_port
from scaling.watchdog import collective_timeout_s
from scaling.world import World


def pin_devices(world: World, cfg: ScalingConfig) -> Pinned:
    """This rank's device by the one rule (``scaling.devices.pin_rank``, applied once): one GPU
    per process, except tf.distribute in one process, which drives every local GPU."""
    all_local = cfg.engine == ENGINE_MIRRORED and cfg.mode != MODE_ENSEMBLE and world.size == 1
    return pin_rank(world.local_rank, world.local_size, share=cfg.share_gpu, all_local=all_local)


def _pin(world: World, cfg: ScalingConfig) -> bool:
    """``pin_devices`` (done already when scaling.run pinned first); True on a GPU."""
    return pin_devices(world, cfg).on_gpu


class SingleEngine:
    name = "single"

    def __init__(self, world: World, cfg: ScalingConfig, coll: LocalCollectives):
        self.world, self.cfg, self.coll = world, cfg, coll
        self.on_gpu = False

    def setup(self) -> None:
        self.on_gpu = _pin(self.world, self.cfg)

    @property
    def replicas(self) -> int:
        return 1

    def local_replica_ids(self) -> list[int]:
        """Global indices of the replicas this process feeds."""
        return [0]

    def scope(self):
        import contextlib

        return contextlib.nullcontext()

    def replicas_object(self) -> Replicas:
        return Replicas()

    def wrap(self) -> Callable | None:
        return None

    def after_build(self, gan) -> None:
        pass

    def feed(self, batches: list) -> tuple[Any, Any]:
        (real, label), = batches
        return real, label

    def local_values(self, value) -> list:
        return [value]

    def is_chief(self) -> bool:
        return self.world.rank == 0

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "replicas": self.replicas}


class _HorovodReplicas(Replicas):
    """Horovod's replicas: every rank of the job, or of one process set (an ensemble member)."""

    def __init__(self, hvd, timed_comm: bool = True, process_set=None, comm_fence: bool = True):
        self.hvd = hvd
        self.timed_comm = timed_comm
        self.comm_fence = comm_fence
        self.process_set = hvd.global_process_set if process_set is None else process_set

    def index(self):
        return self.process_set.rank()

    def count(self) -> int:
        return self.process_set.size()

    def has_collectives(self) -> bool:
        return True   # Horovod reduces even at one rank, so the one-rank baseline pays for it too

    def reduce(self, grads, variables, group):
        import tensorflow as tf

        # Horovod's own reduction (fusion, compression, process set) of gradients computed
        # outside it, so that XLA can compile the backward pass without the all-reduce.
        reduce_inner = self.hvd.DistributedGradientTape(tf.GradientTape(), op=self.hvd.Average,
                                                        process_set=self.process_set)._allreduce_grads
        if not self.timed_comm:
            # No timestamps, so no dependency on every gradient: Horovod may start reducing the
            # first gradients while back-propagation still computes the others.
            return list(reduce_inner(grads, variables)), tf.constant(float("nan"), tf.float64)
        return timed(lambda g: list(reduce_inner(g, variables)), list(grads), self.comm_fence)


class HorovodEngine(SingleEngine):
    name = ENGINE_HOROVOD

    def setup(self) -> None:
        self.cfg.set_horovod_environment()
        import horovod.tensorflow as hvd

        hvd.init()
        self.hvd = hvd
        if hvd.size() != self.world.size or hvd.rank() != self.world.rank:
            raise RuntimeError(f"Horovod sees rank {hvd.rank()}/{hvd.size()} but the launcher says "
                               f"{self.world.rank}/{self.world.size}")
        self.on_gpu = _pin(self.world, self.cfg)

    @property
    def replicas(self) -> int:
        return self.world.size

    def local_replica_ids(self) -> list[int]:
        return [self.world.rank]

    def replicas_object(self) -> Replicas:
        return _HorovodReplicas(self.hvd, timed_comm=self.cfg.comm_timed, comm_fence=self.cfg.comm_fenced)

    def after_build(self, gan) -> None:
        # Identical start on every rank: weights, optimiser slots, the iteration counter and the
        # noise generator's state from rank 0 (after a resume: what rank 0 restored).
        self.hvd.broadcast_variables(gan.all_variables(), root_rank=0)

    def start_timeline(self, path) -> None:
        """Record Horovod's timeline into ``path`` (rank 0 writes it; every rank calls this).
        Needs HOROVOD_TIMELINE=DYNAMIC set before Horovod initialised."""
        self.hvd.start_timeline(str(path), mark_cycles=False)

    def stop_timeline(self) -> None:
        self.hvd.stop_timeline()

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "replicas": self.replicas,
                "fusion_threshold_bytes": os.environ.get("HOROVOD_FUSION_THRESHOLD", "default"),
                "cycle_time_ms": os.environ.get("HOROVOD_CYCLE_TIME", "default"),
                "mpi_built": bool(self.hvd.mpi_built()), "gloo_built": bool(self.hvd.gloo_built()),
                "nccl_built": bool(self.hvd.nccl_built())}


class _StrategyReplicas(Replicas):
    def __init__(self, n: int):
        self.n = n

    def index(self):
        import tensorflow as tf

        return tf.distribute.get_replica_context().replica_id_in_sync_group

    def count(self) -> int:
        return self.n

    def reduce_mean(self, grads, group):
        import tensorflow as tf

        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.MEAN, grads)


class MirroredEngine(SingleEngine):
    name = ENGINE_MIRRORED

    def setup(self) -> None:
        import tensorflow as tf

        w = self.world
        if w.size > 1:
            # Pinned before the cluster spec: the strategy initialises TensorFlow's devices.
            self.on_gpu = _pin(w, self.cfg)
            # One port per process of a host, counted by hostname: emulated nodes share one.
            hosts = self.coll.allgather(w.hostname)
            port = worker_port(hosts[:w.rank].count(w.hostname), self.cfg.worker_base_port)
            addresses = self.coll.allgather(f"{w.hostname}:{port}")
            os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": addresses},
                                                  "task": {"type": "worker", "index": w.rank}})
            impl = (tf.distribute.experimental.CommunicationImplementation.NCCL if self.on_gpu
                    else tf.distribute.experimental.CommunicationImplementation.RING)
            self.strategy = tf.distribute.MultiWorkerMirroredStrategy(
                communication_options=tf.distribute.experimental.CommunicationOptions(
                    implementation=impl, timeout_seconds=collective_timeout_s()))
        else:
            # One process drives every local GPU itself.
            self.on_gpu = _pin(w, self.cfg)
            if self.on_gpu:
                self.strategy = tf.distribute.MirroredStrategy()
            else:
                cpu = tf.config.list_physical_devices("CPU")[0]
                n = self.cfg.cpu_replicas
                tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
                devices = [f"/cpu:{i}" for i in range(n)]
                self.strategy = tf.distribute.MirroredStrategy(
                    devices=devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
        self._n_local = self.strategy.num_replicas_in_sync // max(1, w.size)

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    def local_replica_ids(self) -> list[int]:
        return [self.world.rank * self._n_local + i for i in range(self._n_local)]

    def scope(self):
        return self.strategy.scope()

    def replicas_object(self) -> Replicas:
        return _StrategyReplicas(self.replicas)

    def wrap(self) -> Callable:
        strategy = self.strategy

        def per_replica(fn):
            return lambda real, label: strategy.run(fn, args=(real, label))

        return per_replica

    def feed(self, batches: list):
        """Per-replica values: local replica i gets ``batches[i]``."""
        if len(batches) == 1 and self.world.size > 1:
            return batches[0]  # one local replica per worker: a plain tensor is that replica's
        reals = [b[0] for b in batches]
        labels = [b[1] for b in batches]

        def pick(values):
            return self.strategy.experimental_distribute_values_from_function(
                lambda ctx: values[ctx.replica_id_in_sync_group - self.local_replica_ids()[0]])

        return pick(reals), pick(labels)

    def local_values(self, value) -> list:
        return list(self.strategy.experimental_local_results(value))

    def is_chief(self) -> bool:
        return self.world.rank == 0

    def describe(self) -> dict[str, Any]:
        kind = "MultiWorkerMirroredStrategy" if self.world.size > 1 else "MirroredStrategy"
        return {"engine": self.name, "strategy": kind, "replicas": self.replicas,
                "local_replicas": self._n_local}


def make_engine(cfg: ScalingConfig, world: World, coll: LocalCollectives) -> SingleEngine:
    if cfg.mode == MODE_ENSEMBLE:
        from scaling.ensemble_engine import GroupEngine, MemberEngine   # here: that module imports this one

        return (GroupEngine if cfg.group_size > 1 else MemberEngine)(world, cfg, coll)
    # Horovod on one process still initialises, so the one-rank baseline pays its costs too.
    return MirroredEngine(world, cfg, coll) if cfg.engine == ENGINE_MIRRORED else HorovodEngine(world, cfg, coll)

