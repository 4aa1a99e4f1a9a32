"""The engine of an ensemble member of one rank: one replica, no reduction, its own checkpoints.

It is the single-replica engine (plain gradients: the same numbers a one-rank Horovod run
computes, whose all-reduce of one is the identity) without Horovod: an initialised Horovod
would run its background coordination across the whole world every cycle, coupling ranks that
share nothing and taking CPU from their compute.
"""
from __future__ import annotations

from typing import Any

from scaling.engines import SingleEngine


class MemberEngine(SingleEngine):
    name = "member"

    def is_chief(self) -> bool:
        # Every rank is the only rank of its member, so it saves its member's checkpoints.
        return True

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "replicas": self.replicas, "reduction": "none (one rank per member)"}
