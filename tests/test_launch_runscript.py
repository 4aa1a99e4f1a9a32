"""apptainer/runscript.sh run as a plain shell script with a fake interpreter, and the recipe.

PYTHON points at tests/helpers/launch_fake_python.sh, which prints 'fake-python: <args>'.
"""
from __future__ import annotations

import os
import re
import sys
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNSCRIPT = ROOT / "apptainer" / "runscript.sh"
DEF = ROOT / "apptainer" / "bologan.def"
FAKE_PY = str(Path(__file__).parent / "helpers" / "launch_fake_python.sh")


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = dict(os.environ, PYTHON=FAKE_PY, BOLOGAN_WORK=str(tmp_path))
    full.pop("BOLOGAN_DATA", None)
    full.update(env)
    return subprocess.run(["bash", str(RUNSCRIPT), *args], env=full, cwd=tmp_path, capture_output=True,
                          text=True, timeout=30)


def calls(res: subprocess.CompletedProcess) -> list[str]:
    return [line[len("fake-python: "):] for line in res.stdout.splitlines() if line.startswith("fake-python: ")]


def test_train_without_data_uses_synthetic_showers(tmp_path):
    res = run(tmp_path, "train", "pions")
    assert res.returncode == 0, res.stderr
    assert calls(res) == [f"-m bologan.train --particle pions --out {tmp_path}/train/pions"]
    assert "synthetic" in res.stderr


def test_train_with_data_and_extra_args(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "photons.parquet").write_bytes(b"")
    res = run(tmp_path, "train", "photons", "--iterations", "50")
    assert calls(res) == [f"-m bologan.train --particle photons --out {tmp_path}/train/photons "
                          f"--data {tmp_path}/data/photons.parquet --iterations 50"]


def test_train_continues_from_checkpoints(tmp_path):
    ckpt = tmp_path / "train" / "pions" / "checkpoints"
    ckpt.mkdir(parents=True)
    (ckpt / "ckpt-100.index").write_bytes(b"")
    res = run(tmp_path, "train", "pions")
    assert calls(res)[0].endswith("--resume")


def test_train_with_own_out_is_left_alone(tmp_path):
    res = run(tmp_path, "train", "pions", "--out", "elsewhere")
    assert calls(res) == ["-m bologan.train --particle pions --out elsewhere"]


def test_bestiter_prefers_held_out_reference(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    (data / "pions.parquet").write_bytes(b"")
    res = run(tmp_path, "bestiter", "pions", "--every", "100", BOLOGAN_DATA=str(data))
    assert calls(res) == [f"-m bologan.evaluate {tmp_path}/train/pions --reference {data}/pions.parquet --every 100"]
    (data / "pions_test.parquet").write_bytes(b"")
    res = run(tmp_path, "bestiter", "pions", BOLOGAN_DATA=str(data))
    assert calls(res) == [f"-m bologan.evaluate {tmp_path}/train/pions --reference {data}/pions_test.parquet"]


def test_bestiter_without_reference_exits_2(tmp_path):
    res = run(tmp_path, "bestiter", "photons")
    assert res.returncode == 2 and "reference" in res.stderr and not calls(res)


@pytest.mark.parametrize("command, module", [("scale", "scaling.run"), ("analyse", "analysis"),
                                             ("analyze", "analysis"), ("study", "launch.study")])
def test_pass_through_commands_keep_arguments_intact(tmp_path, command, module):
    res = run(tmp_path, command, "--out", "a dir/with space", "--mode", "weak")
    assert res.returncode == 0
    assert calls(res) == [f"-m {module} --out a dir/with space --mode weak"]


def test_init_creates_folders_and_synthetic_data(tmp_path):
    res = run(tmp_path, "init", "--synthetic", "100")
    assert res.returncode == 0, res.stderr
    assert {p.name for p in tmp_path.iterdir()} >= {"data", "train", "results"}
    assert calls(res) == [
        f"-m bologan.data generate --particle photons --events 100 --seed 10 --out {tmp_path}/data/photons.parquet",
        f"-m bologan.data generate --particle pions --events 100 --seed 10 --out {tmp_path}/data/pions.parquet"]


def test_init_without_synthetic_explains_how_to_import(tmp_path):
    res = run(tmp_path, "init")
    assert res.returncode == 0 and not calls(res)
    assert "bologan.data convert --from hdf5" in res.stdout


@pytest.mark.parametrize("args, message", [
    ((), "no command"), (("fly",), "unknown command 'fly'"), (("train",), "needs a particle"),
    (("train", "electrons"), "unknown particle 'electrons'"), (("bestiter",), "needs a particle"),
    (("init", "--synthetic", "many"), "positive integer"),
])
def test_bad_commands_print_usage_and_exit_2(tmp_path, args, message):
    res = run(tmp_path, *args)
    assert res.returncode == 2
    assert message in res.stderr and "usage:" in res.stderr and not calls(res)


def test_help_exits_0(tmp_path):
    res = run(tmp_path, "help")
    assert res.returncode == 0
    for command in ("init", "train PARTICLE", "bestiter PARTICLE", "scale", "analyse", "study"):
        assert command in res.stdout


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^%(\w+)[^\n]*\n", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_recipe_uses_the_pin_file_and_the_runscript():
    text = DEF.read_text()
    header = re.split(r"^%", text, maxsplit=1, flags=re.M)[0]
    assert re.search(r"^Bootstrap: docker$", header, re.M) and re.search(r"^From: \S+", header, re.M)
    s = _sections(text)
    assert {"arguments", "labels", "help", "files", "post", "environment", "runscript", "test"} <= set(s)
    assert "constraints.txt /opt/bologan/constraints.txt" in s["files"]
    assert "apptainer/runscript.sh" in s["files"]
    assert "-c /opt/bologan/constraints.txt" in s["post"]
    # One pin source: the recipe names no versions of Python packages itself.
    assert not re.search(r"(tensorflow|horovod|numpy)[^\s]*==", text)
    assert "HOROVOD_GPU_OPERATIONS=NCCL" in s["post"]
    assert "runscript.sh" in s["runscript"] and '"$@"' in s["runscript"]
    copied = {line.split()[0] for line in s["files"].splitlines() if line.strip()}
    for path in copied:
        assert (ROOT / path).exists(), f"%files copies {path}, which must exist"
    # Every package the wheel installs (setup.cfg) travels into the image, and the docs the README links.
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages | {"docs", "README.md"} <= copied, f"%files misses {sorted(packages - copied)}"


def _apt_installs(post: str) -> set[str]:
    """Package names of every 'apt-get install' in %post (line continuations joined)."""
    text = post.replace("\\\n", " ")
    names: set[str] = set()
    for line in text.splitlines():
        words = line.split()
        if "apt-get" in words and "install" in words:
            names |= {w for w in words[words.index("install") + 1:] if not w.startswith("-")}
    return names


def test_recipe_gpu_build_keeps_the_base_nccl_and_brings_infiniband():
    s = _sections(DEF.read_text())
    installed = _apt_installs(s["post"])
    # The CUDA devel base holds libnccl2/libnccl-dev at its CUDA release: installing them again makes
    # apt refuse ("Held packages were changed").
    assert not {p for p in installed if p.startswith("libnccl")}, installed
    # NCCL's and Open MPI's InfiniBand transports need verbs and the providers (a recommendation
    # only, so it must be named with --no-install-recommends).
    assert {"rdma-core", "libibverbs1", "ibverbs-providers", "librdmacm1"} <= installed
    assert "--no-install-recommends" in s["post"]
    # A GPU build without nvcc or NCCL stops instead of building a Horovod without NCCL.
    assert "/usr/include/nccl.h" in s["post"] and "exit 1" in s["post"]


def test_recipe_checks_horovod_has_nccl_in_a_gpu_build():
    s = _sections(DEF.read_text())
    check = "/opt/bologan/tools/install_plan.py check-horovod --tf-build {{ TF_BUILD }}"
    assert check in s["post"] and check in s["test"]
    assert "tools/install_plan.py /opt/bologan/tools/install_plan.py" in s["files"]
    assert "libibverbs.so.1" in s["test"]


def test_recipe_check_is_the_one_install_uses(tmp_path):
    """The %test line, run here against a fake GPU-built Horovod without NCCL, fails; with NCCL it passes."""
    s = _sections(DEF.read_text())
    (line,) = [x.strip() for x in s["test"].splitlines() if "check-horovod" in x]
    pkg = tmp_path / "horovod"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for nccl, rc in ((0, 1), (2, 0)):
        (pkg / "tensorflow.py").write_text("mpi_built = gloo_built = lambda: True\n"
                                           f"nccl_built = lambda: {nccl}\n")
        cmd = line.replace("/opt/venv/bin/python", sys.executable).replace(
            "/opt/bologan/", str(ROOT) + "/").replace("{{ TF_BUILD }}", "gpu")
        res = subprocess.run(cmd, shell=True, env=dict(os.environ, PYTHONPATH=str(tmp_path)),
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == rc, res.stderr
