"""Which GPU a rank uses: one rule, decided from plain inputs, shared by training, the all-reduce
benchmark, the NVML meter and the preflight (DESIGN.md section 4).

Nothing here touches TensorFlow, NVML or the environment: callers pass what those report, so
tests drive every layout with plain values.

How CUDA numbers GPUs, and so what TensorFlow's ``/GPU:n`` is inside a process:
``CUDA_VISIBLE_DEVICES`` lists the GPUs the process sees, in that order; its integer entries
count GPUs in ``CUDA_DEVICE_ORDER``. With ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (which the callers
set before CUDA starts) that order is NVML's index order, so every visible GPU has a known PCI
bus id. ``GPU-...`` entries are UUIDs (unique prefixes allowed), ``MIG-...`` entries are MIG
instances of a GPU.

The rule, per process that trains one replica:
- no GPU visible to TensorFlow: the CPU (refused when the node has an NVIDIA GPU that
  TensorFlow cannot see: the numbers would be CPU numbers on a GPU allocation);
- one GPU visible (the launcher bound one GPU per task, e.g. ``--gpu-bind=closest``): that GPU;
- several visible: the one at position ``local rank`` when there are at least as many as local
  ranks; fewer GPUs than local ranks is refused unless sharing was asked for (then position
  ``local rank mod GPUs``).
A process that drives every local GPU itself (tf.distribute in one process) takes them all.
Ranks of one node that still end on one GPU (each was bound the same one) are found by
``node_sharing`` once every rank's choice is known.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

# The value callers put in CUDA_DEVICE_ORDER before CUDA starts, so integer entries of
# CUDA_VISIBLE_DEVICES and TensorFlow's GPU order both follow NVML's (PCI bus) order.
CUDA_ORDER = "PCI_BUS_ID"
SHARE_HINT = "give one GPU per rank (srun --gpus-per-task=1, or fewer ranks per node), or --share-gpu to split it"


@dataclass(frozen=True)
class NodeGpu:
    """One physical GPU of the node, as NVML lists it (index order = PCI bus order)."""
    nvml_index: int
    pci_bus_id: str                       # any format; compared after normalise_bus_id
    uuid: str
    name: str = ""
    mig_uuids: tuple[str, ...] = ()       # MIG instances on it (MIG mode on), else empty


@dataclass(frozen=True)
class GpuChoice:
    """The GPU one process trains on."""
    position: int                         # TensorFlow's /GPU:<position> before pinning
    pci_bus_id: str | None                # normalised; None when NVML could not say
    uuid: str | None
    nvml_index: int | None
    name: str = ""
    mig_uuid: str | None = None           # set when the process runs on a MIG instance

    @property
    def identity(self) -> str | None:
        """What tells two ranks' GPUs apart on one node: bus id, else UUID; None when neither is
        known (without NVML every rank bound to one GPU sees it as position 0, which says
        nothing about whether they share it)."""
        return self.pci_bus_id or self.uuid

    def to_dict(self) -> dict:
        return {"position": self.position, "pci_bus_id": self.pci_bus_id, "uuid": self.uuid,
                "nvml_index": self.nvml_index, "name": self.name, "mig_uuid": self.mig_uuid}


@dataclass(frozen=True)
class Decision:
    """A rank's device: ``gpus`` empty means the CPU; ``refusal`` is one line, or None."""
    gpus: tuple[GpuChoice, ...] = ()
    refusal: str | None = None
    warning: str | None = None

    @property
    def on_gpu(self) -> bool:
        return bool(self.gpus)

    @property
    def device(self) -> str:
        """Short name of the device: 'GPU <bus id> (<name>)' or 'CPU'."""
        if not self.gpus:
            return "CPU"
        return ", ".join(f"GPU {g.pci_bus_id or g.uuid or g.position}" + (f" ({g.name})" if g.name else "")
                         for g in self.gpus)


_BUS_ID = re.compile(r"^(?:([0-9a-fA-F]+):)?([0-9a-fA-F]+):([0-9a-fA-F]+)\.([0-9a-fA-F]+)$")


def normalise_bus_id(text: str | bytes | None) -> str | None:
    """PCI bus id as 'dddd:bb:dd.f' in lower case: NVML's '00000000:3B:00.0' and TensorFlow's
    '0000:3b:00.0' give the same string. None for None or a string that is not a bus id."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    m = _BUS_ID.match(text.strip())
    if not m:
        return None
    domain, bus, dev, fn = m.groups()
    return f"{int(domain or '0', 16):04x}:{int(bus, 16):02x}:{int(dev, 16):02x}.{int(fn, 16):x}"


def parse_visible(text: str) -> list[str]:
    """CUDA_VISIBLE_DEVICES entries up to the first invalid one (CUDA ignores the rest too)."""
    entries: list[str] = []
    for raw in text.split(","):
        item = raw.strip()
        if item.lstrip("-").isdigit():
            if int(item) < 0:
                break
            entries.append(str(int(item)))
        elif item.startswith(("GPU-", "MIG-")):
            entries.append(item)
        else:
            break
    return entries


def _choice(position: int, gpu: NodeGpu | None, mig: str | None = None) -> GpuChoice:
    if gpu is None:
        return GpuChoice(position, None, None, None)
    return GpuChoice(position, normalise_bus_id(gpu.pci_bus_id), gpu.uuid, gpu.nvml_index, gpu.name, mig)


def visible_gpus(cuda_visible_devices: str | None, node_gpus: Sequence[NodeGpu]) -> tuple[list[GpuChoice], str | None]:
    """The GPUs a process with this CUDA_VISIBLE_DEVICES sees, in CUDA's (TensorFlow's) order,
    matched to the node's NVML list; ``(gpus, problem)``. Entries naming no GPU of the node
    end the list, as in CUDA; an ambiguous UUID prefix is a problem."""
    if cuda_visible_devices is None:
        return [_choice(i, g) for i, g in enumerate(node_gpus)], None
    out: list[GpuChoice] = []
    by_index = {g.nvml_index: g for g in node_gpus}
    for entry in parse_visible(cuda_visible_devices):
        if entry.isdigit():
            gpu = by_index.get(int(entry))
            if gpu is None:
                break
            out.append(_choice(len(out), gpu))
            continue
        if entry.startswith("MIG-"):
            parents = [g for g in node_gpus if any(m.startswith(entry) for m in g.mig_uuids)]
            if len(parents) != 1:
                break
            mig = next(m for m in parents[0].mig_uuids if m.startswith(entry))
            out.append(_choice(len(out), parents[0], mig))
            continue
        matches = [g for g in node_gpus if g.uuid.startswith(entry)]
        if len(matches) > 1:
            return out, f"CUDA_VISIBLE_DEVICES entry {entry!r} matches {len(matches)} GPUs (give more of the UUID)"
        if not matches:
            break
        out.append(_choice(len(out), matches[0]))
    return out, None


def decide(*, local_rank: int, local_size: int, tf_gpu_count: int, visible: Sequence[GpuChoice] | None,
           share: bool = False, all_local: bool = False, gpu_hardware: str | None = None,
           cuda_visible_devices: str | None = None, cuda_device_order: str | None = CUDA_ORDER) -> Decision:
    """This process's device.

    ``tf_gpu_count``: GPUs TensorFlow lists. ``visible``: those GPUs as ``visible_gpus`` matched
    them (None when NVML could not be asked: positions only, no bus ids). ``share``: the user
    allows several ranks on one GPU. ``all_local``: the process drives every visible GPU.
    ``gpu_hardware``: evidence of an NVIDIA GPU on the node ('/dev/nvidia0', 'nvidia-smi'), or
    None. ``cuda_device_order``: the CUDA_DEVICE_ORDER in force (bus ids are known only in
    PCI_BUS_ID order).
    """
    if tf_gpu_count == 0:
        hidden = cuda_visible_devices is not None and not parse_visible(cuda_visible_devices)
        if gpu_hardware and not hidden:
            return Decision(refusal=(
                f"this node has an NVIDIA GPU ({gpu_hardware}) but TensorFlow sees none: install the GPU build "
                "(make install TF_BUILD=gpu; in a container: apptainer --nv), or set CUDA_VISIBLE_DEVICES= "
                "to train on the CPU on purpose"))
        return Decision()
    known = list(visible) if visible is not None and len(visible) == tf_gpu_count else None
    warning = None
    if visible is not None and known is None:
        warning = (f"TensorFlow lists {tf_gpu_count} GPU(s) but NVML matched {len(visible)} to "
                   f"CUDA_VISIBLE_DEVICES={cuda_visible_devices!r}: GPU bus ids unknown, GPU energy unavailable")
    elif known is not None and (cuda_device_order or "FASTEST_FIRST") != CUDA_ORDER and tf_gpu_count > 1:
        known, warning = None, (f"CUDA_DEVICE_ORDER={cuda_device_order}: TensorFlow's GPU order is not NVML's, "
                                f"so GPU bus ids are unknown (unset it or set {CUDA_ORDER})")
    elif visible is None:
        warning = "NVML unavailable: the GPU's PCI bus id is unknown, GPU energy unavailable"

    def at(position: int) -> GpuChoice:
        return known[position] if known is not None else GpuChoice(position, None, None, None)

    if all_local:
        return Decision(tuple(at(i) for i in range(tf_gpu_count)), warning=warning)
    if tf_gpu_count == 1 or (local_rank < tf_gpu_count and tf_gpu_count >= local_size):
        position = 0 if tf_gpu_count == 1 else local_rank
        return Decision((at(position),), warning=warning)
    if not share:
        return Decision(refusal=(f"{local_size} ranks on this node but {tf_gpu_count} GPUs visible to each "
                                 f"(local rank {local_rank} would share one): {SHARE_HINT}"))
    return Decision((at(local_rank % tf_gpu_count),), warning=warning)


@dataclass(frozen=True)
class RankGpu:
    """One rank's choice as every rank learns it (gathered): where it runs and on what."""
    rank: int
    node: str
    identity: str | None                  # GpuChoice.identity, None for a CPU rank


def node_sharing(ranks: Iterable[RankGpu], share: bool) -> tuple[dict[int, int], str | None]:
    """How many ranks use each rank's GPU (``{rank: sharers}``, 1 = its own; CPU ranks absent),
    and a one-line refusal when ranks of one node share a GPU without ``share``."""
    groups: dict[tuple[str, str], list[int]] = {}
    for r in ranks:
        if r.identity is not None:
            groups.setdefault((r.node, r.identity), []).append(r.rank)
    sharers = {rank: len(members) for members in groups.values() for rank in members}
    if not share:
        for (node, identity), members in sorted(groups.items()):
            if len(members) > 1:
                return sharers, (f"ranks {', '.join(map(str, sorted(members)))} on {node} all use GPU {identity}: "
                                 f"{SHARE_HINT}")
    return sharers, None


def nvidia_device_files(names: Iterable[str]) -> list[str]:
    """The GPU device files among a /dev listing ('nvidia0', 'nvidia1', ...; not nvidiactl)."""
    return sorted(n for n in names if re.fullmatch(r"nvidia\d+", n))
