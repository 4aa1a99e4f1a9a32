"""The engines of an ensemble member: one rank alone, or a group of ranks data parallel.

``MemberEngine`` (``--group-size 1``) is the single-replica engine (plain gradients: the same
numbers a one-rank Horovod run computes, whose all-reduce of one is the identity) without
Horovod: an initialised Horovod would run its background coordination across the whole world
every cycle, coupling ranks that share nothing and taking CPU from their compute.

``GroupEngine`` (``--group-size G > 1``) is the Horovod engine on one Horovod process set per
member: member k is ranks k*G .. k*G+G-1, its gradients are averaged over those ranks only, and
its variables are broadcast from the group's first rank. Here Horovod must run anyway, and its
coordination across the world is the price of the reduction inside each group.
"""
from __future__ import annotations

from typing import Any

from bologan.step import Replicas
from scaling.engines import HorovodEngine, SingleEngine, _HorovodReplicas, _pin


class MemberEngine(SingleEngine):
    name = "member"

    def is_chief(self) -> bool:
        # Every rank is the only rank of its member, so it saves its member's checkpoints.
        return True

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "replicas": self.replicas, "reduction": "none (one rank per member)"}


def group_ranks(world_size: int, group_size: int) -> list[list[int]]:
    """The global ranks of every member, in member order (member k: k*G .. k*G+G-1)."""
    return [list(range(k * group_size, (k + 1) * group_size)) for k in range(world_size // group_size)]


class GroupEngine(HorovodEngine):
    name = "group"

    @property
    def group_size(self) -> int:
        return self.cfg.group_size

    @property
    def member(self) -> int:
        return self.world.rank // self.group_size

    @property
    def rank_in_group(self) -> int:
        return self.world.rank % self.group_size

    @property
    def root_rank(self) -> int:
        """The group's first rank, as a global rank: Horovod's ``root_rank`` is global even
        inside a process set (checked by tests/test_scaling_ensemble_groups.py)."""
        return self.member * self.group_size

    def setup(self) -> None:
        self.cfg.set_horovod_environment()
        import horovod.tensorflow as hvd

        if hvd.is_initialized():
            # Under horovodrun the host collectives started Horovod before this engine, without
            # process sets; static sets are given only to init, so start it again with them.
            hvd.shutdown()
        groups = group_ranks(self.world.size, self.group_size)
        # One member on every rank: its set is the global one (Horovod refuses a duplicate).
        sets = [hvd.ProcessSet(ranks) for ranks in groups] if len(groups) > 1 else []
        hvd.init(process_sets=sets)
        self.hvd = hvd
        self.process_set = sets[self.member] if sets else hvd.global_process_set
        if hvd.size() != self.world.size or hvd.rank() != self.world.rank:
            raise RuntimeError(f"Horovod sees rank {hvd.rank()}/{hvd.size()} but the launcher says "
                               f"{self.world.rank}/{self.world.size}")
        if self.process_set.size() != self.group_size or self.process_set.rank() != self.rank_in_group:
            raise RuntimeError(f"Horovod process set of member {self.member} has rank {self.process_set.rank()}/"
                               f"{self.process_set.size()}, expected {self.rank_in_group}/{self.group_size}")
        self.on_gpu = _pin(self.world, self.cfg)

    @property
    def replicas(self) -> int:
        return self.group_size

    def local_replica_ids(self) -> list[int]:
        """This rank's replica index inside its member: its shard of the member's data."""
        return [self.rank_in_group]

    def replicas_object(self) -> Replicas:
        return _HorovodReplicas(self.hvd, timed_comm=self.cfg.comm_timed, comm_fence=self.cfg.comm_fenced,
                                process_set=self.process_set)

    def after_build(self, gan) -> None:
        # Identical start on every rank of the member, from its first rank (after a resume:
        # what that rank restored); other members are untouched.
        self.hvd.broadcast_variables(gan.all_variables(), root_rank=self.root_rank, process_set=self.process_set)

    def is_chief(self) -> bool:
        # The group's first rank saves its member's checkpoints.
        return self.rank_in_group == 0

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "engine": self.name, "replicas": self.replicas,
                "group_size": self.group_size, "member_ranks": group_ranks(self.world.size, self.group_size),
                "reduction": f"Horovod all-reduce inside each group of {self.group_size} ranks (process sets)"}
