"""The one rule deciding which GPU a rank uses (common.gpu_binding), driven with the values
TensorFlow, NVML and the launchers report on real layouts: CUDA_VISIBLE_DEVICES permutations,
UUIDs, srun --gpu-bind=closest (each rank sees one GPU as its /GPU:0), MIG, shared GPUs, and a
GPU node whose TensorFlow sees no GPU."""
from __future__ import annotations

import pytest

from common.gpu_binding import (NodeGpu, RankGpu, decide, node_sharing, normalise_bus_id, nvidia_device_files,
                                visible_gpus)

# A 4-GPU node as NVML lists it (index order = PCI bus order), bus ids in NVML's own format.
NODE = [NodeGpu(0, "00000000:1B:00.0", "GPU-a0", "NVIDIA A100"), NodeGpu(1, "00000000:3B:00.0", "GPU-b1", "NVIDIA A100"),
        NodeGpu(2, "00000000:8A:00.0", "GPU-c2", "NVIDIA A100"), NodeGpu(3, "00000000:C1:00.0", "GPU-d3", "NVIDIA A100")]
BUS = ["0000:1b:00.0", "0000:3b:00.0", "0000:8a:00.0", "0000:c1:00.0"]


def chosen_bus(cvd, local_rank, local_size, share=False, node=NODE):
    visible, problem = visible_gpus(cvd, node)
    assert problem is None
    d = decide(local_rank=local_rank, local_size=local_size, tf_gpu_count=len(visible), visible=visible,
               share=share, cuda_visible_devices=cvd)
    assert d.refusal is None, d.refusal
    return [g.pci_bus_id for g in d.gpus]


@pytest.mark.parametrize("nvml, tf", [("00000000:3B:00.0", "0000:3b:00.0"), ("0000:3b:00.0", "0000:3b:00.0"),
                                      ("3b:00.0", "0000:3b:00.0"), (b"00000001:C1:00.1", "0001:c1:00.1")])
def test_bus_id_formats_of_nvml_and_tensorflow_compare_equal(nvml, tf):
    assert normalise_bus_id(nvml) == normalise_bus_id(tf) == tf
    assert normalise_bus_id("GPU-a0") is None and normalise_bus_id(None) is None


def test_no_visible_devices_variable_local_rank_i_gets_gpu_i():
    assert [chosen_bus(None, r, 4)[0] for r in range(4)] == BUS


@pytest.mark.parametrize("cvd, expected", [
    ("0,1,2,3", BUS),
    ("3,2,1,0", BUS[::-1]),                   # a permutation: CUDA's order is the variable's
    ("1,3", [BUS[1], BUS[3]]),
    ("GPU-d3,GPU-a0", [BUS[3], BUS[0]]),      # UUIDs
    ("GPU-c,1", [BUS[2], BUS[1]]),            # unique prefix, mixed with an index
])
def test_cuda_visible_devices_permutations_and_uuids(cvd, expected):
    n = len(expected)
    assert [chosen_bus(cvd, r, n)[0] for r in range(n)] == expected


def test_gpu_bind_closest_each_rank_sees_one_gpu_as_index_0():
    # srun --gpus-per-task=1 --gpu-bind=closest: rank i gets CUDA_VISIBLE_DEVICES=<its GPU>
    per_rank = ["0", "1", "2", "3"]
    assert [chosen_bus(cvd, r, 4)[0] for r, cvd in enumerate(per_rank)] == BUS
    # Slurm may also bind by a permuted index list per task
    assert chosen_bus("2", 0, 4) == [BUS[2]]


def test_cuda_stops_at_the_first_invalid_entry_and_at_unknown_gpus():
    visible, _ = visible_gpus("1,-1,2", NODE)
    assert [g.nvml_index for g in visible] == [1]
    visible, _ = visible_gpus("1,7,2", NODE)
    assert [g.nvml_index for g in visible] == [1]
    visible, problem = visible_gpus("GPU-", NODE)
    assert visible == [] and "matches 4 GPUs" in problem


def test_more_ranks_than_gpus_refused_in_one_line_unless_shared():
    visible, _ = visible_gpus("0,1", NODE)
    d = decide(local_rank=3, local_size=4, tf_gpu_count=2, visible=visible)
    assert d.refusal and "\n" not in d.refusal and "4 ranks on this node but 2 GPUs" in d.refusal
    assert "--share-gpu" in d.refusal
    assert chosen_bus("0,1", 3, 4, share=True) == [BUS[1]]
    assert chosen_bus("0,1", 2, 4, share=True) == [BUS[0]]


def test_ranks_bound_to_one_gpu_each_are_found_sharing_on_their_node():
    # srun --gpus-per-node=1 --ntasks-per-node=2: both ranks see the node's one GPU as /GPU:0
    rows = [RankGpu(0, "n1", BUS[0]), RankGpu(1, "n1", BUS[0]), RankGpu(2, "n2", BUS[0]), RankGpu(3, "n2", BUS[1]),
            RankGpu(4, "n3", None)]
    sharers, problem = node_sharing(rows, share=False)
    assert problem == (f"ranks 0, 1 on n1 all use GPU {BUS[0]}: give one GPU per rank (srun --gpus-per-task=1, "
                       "or fewer ranks per node), or --share-gpu to split it")
    assert sharers == {0: 2, 1: 2, 2: 1, 3: 1}            # same bus id on another node is another GPU
    assert node_sharing(rows, share=True) == (sharers, None)


def test_mig_instance_is_chosen_and_flagged():
    node = [NODE[0], NodeGpu(1, "00000000:3B:00.0", "GPU-b1", "NVIDIA A100", ("MIG-11", "MIG-12"))]
    visible, _ = visible_gpus("MIG-12", node)
    d = decide(local_rank=0, local_size=1, tf_gpu_count=1, visible=visible, cuda_visible_devices="MIG-12")
    (g,) = d.gpus
    assert (g.pci_bus_id, g.mig_uuid, g.position) == (BUS[1], "MIG-12", 0)
    # two ranks on two instances of one GPU: same bus id, so node_sharing sees them share it
    assert node_sharing([RankGpu(0, "n", g.identity), RankGpu(1, "n", g.identity)], False)[1]


def test_gpu_node_whose_tensorflow_sees_none_is_refused():
    d = decide(local_rank=0, local_size=1, tf_gpu_count=0, visible=None, gpu_hardware="/dev/nvidia0")
    assert d.refusal.startswith("this node has an NVIDIA GPU (/dev/nvidia0) but TensorFlow sees none")
    # the CPU on purpose, or no GPU at all: the CPU
    assert decide(local_rank=0, local_size=1, tf_gpu_count=0, visible=None, gpu_hardware="/dev/nvidia0",
                  cuda_visible_devices="").device == "CPU"
    assert decide(local_rank=0, local_size=1, tf_gpu_count=0, visible=None).refusal is None
    assert nvidia_device_files(["nvidiactl", "nvidia-uvm", "nvidia1", "nvidia0", "null"]) == ["nvidia0", "nvidia1"]


def test_without_nvml_or_in_another_order_positions_only_and_said_so():
    d = decide(local_rank=1, local_size=2, tf_gpu_count=2, visible=None)
    assert [(g.position, g.pci_bus_id) for g in d.gpus] == [(1, None)] and "NVML unavailable" in d.warning
    assert d.gpus[0].identity is None           # nothing to compare ranks by: no false sharing refusal
    visible, _ = visible_gpus(None, NODE[:2])
    d = decide(local_rank=1, local_size=2, tf_gpu_count=2, visible=visible, cuda_device_order="FASTEST_FIRST")
    assert d.gpus[0].pci_bus_id is None and "CUDA_DEVICE_ORDER=FASTEST_FIRST" in d.warning
    d = decide(local_rank=0, local_size=1, tf_gpu_count=3, visible=visible)   # TF and NVML disagree
    assert d.gpus[0].pci_bus_id is None and "NVML matched 2" in d.warning


def test_one_process_driving_every_local_gpu_takes_them_all():
    visible, _ = visible_gpus("3,1", NODE)
    d = decide(local_rank=0, local_size=1, tf_gpu_count=2, visible=visible, all_local=True)
    assert [g.pci_bus_id for g in d.gpus] == [BUS[3], BUS[1]]
    assert d.device == f"GPU {BUS[3]} (NVIDIA A100), GPU {BUS[1]} (NVIDIA A100)"
