"""tools/install_plan.py and tools/install.sh --print-plan: which TensorFlow build, which CUDA and
NCCL Horovod is built against, what an unsupported Python is told, and the Makefile's stamp.

Nothing is installed: the decisions are driven with made-up facts, and the probes with fake
environments (a fake nvidia-smi and nvcc on PATH, a fake site-packages holding the NCCL wheel's
layout, NCCL_HOME, a fake horovod package), the Makefile with `make -n`.
"""
from __future__ import annotations

import ast
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "tools" / "install_plan.py"
INSTALL = ROOT / "tools" / "install.sh"

_spec = importlib.util.spec_from_file_location("install_plan", PLAN)
ip = importlib.util.module_from_spec(_spec)
sys.modules["install_plan"] = ip   # NamedTuple classes look their module up while being made
_spec.loader.exec_module(ip)

NCCL = ip.Nccl("/sp/nvidia/nccl/include", "/sp/nvidia/nccl/lib", "pip wheel",
               ("/sp/nvidia/nccl/lib/libnccl.so.2", "/sp/nvidia/nccl/lib/libnccl.so"))


def facts(**kw) -> ip.Facts:
    base = dict(python_version=(3, 11), tf_build="auto", gpu_seen=None, cuda_home=None, cuda_source="",
                cuda_version=None, cuda_headers=True, nccl=None, nccl_problem=None, site_packages_known=False)
    base.update(kw)
    return ip.Facts(**base)


# ----------------------------------------------------------------------------- decisions
@pytest.mark.parametrize("version", [(3, 8), (3, 10), (3, 12), (3, 13)])
def test_unsupported_python_gets_one_line_naming_what_to_install(version):
    with pytest.raises(ip.PlanError) as err:
        ip.decide(facts(python_version=version))
    line = str(err.value)
    assert "\n" not in line and f"Python {version[0]}.{version[1]} cannot install" in line
    assert "TensorFlow 2.15.1 has wheels for Python 3.9-3.11" in line and "make install PYTHON=python3.11" in line


def test_the_tensorflow_named_is_the_pinned_one(tmp_path):
    assert ip.pinned_tensorflow() == "TensorFlow 2.15.1"   # constraints.txt, the one pin file
    other = tmp_path / "constraints.txt"
    other.write_text("# tensorflow==1.0 in a comment\ntensorflow-cpu==2.16.0\ntensorflow == 2.16.0  # why\n")
    assert ip.pinned_tensorflow(str(other)) == "TensorFlow 2.16.0"
    assert ip.pinned_tensorflow(str(tmp_path / "none.txt")) == "TensorFlow"


def test_auto_is_gpu_only_where_a_gpu_is_seen():
    assert ip.decide(facts(gpu_seen="nvidia-smi lists 4 GPU(s)", cuda_home="/cuda", cuda_version="12.2")).tf_build == "gpu"
    # A CUDA toolkit alone (a login node's module) says nothing about the compute nodes.
    plan = ip.decide(facts(cuda_home="/cuda", cuda_version="12.2"))
    assert plan.tf_build == "cpu" and "make install TF_BUILD=gpu" in plan.reason
    assert plan.horovod_env == []


def test_explicit_choice_wins_over_detection():
    assert ip.decide(facts(tf_build="cpu", gpu_seen="nvidia-smi lists 4 GPU(s)")).tf_build == "cpu"
    plan = ip.decide(facts(tf_build="gpu", cuda_home="/cuda", cuda_version="12.2"))
    assert plan.tf_build == "gpu" and plan.reason == "asked for (TF_BUILD=gpu)"


@pytest.mark.parametrize("kw, message", [
    (dict(tf_build="GPU"), "TF_BUILD=GPU: use gpu, cpu or auto"),
    (dict(tf_build="gpu"), "needs a CUDA 12 toolkit"),
    (dict(tf_build="gpu", cuda_home="/c13", cuda_source="nvcc on PATH", cuda_version="13.0"), "is CUDA 13.0"),
    (dict(tf_build="gpu", cuda_home="/cuda", cuda_version="12.2", site_packages_known=True), "no NCCL found"),
    (dict(tf_build="gpu", cuda_home="/cuda", nccl_problem="NCCL_HOME=/x holds no NCCL"), "NCCL_HOME=/x"),
    (dict(gpu_seen="nvidia-smi lists 1 GPU(s)"), "needs a CUDA 12 toolkit"),   # auto on a GPU node
])
def test_a_gpu_build_that_cannot_get_nccl_fails_before_installing(kw, message):
    with pytest.raises(ip.PlanError, match=re.escape(message)):
        ip.decide(facts(**kw))


def test_gpu_build_links_horovod_against_the_nccl_found():
    plan = ip.decide(facts(tf_build="gpu", cuda_home="/cuda", cuda_version="12.2", nccl=NCCL,
                           site_packages_known=True))
    env = dict(plan.horovod_env)
    assert env == {"HOROVOD_GPU_OPERATIONS": "NCCL", "HOROVOD_CUDA_HOME": "/cuda",
                   "HOROVOD_NCCL_INCLUDE": "/sp/nvidia/nccl/include", "HOROVOD_NCCL_LIB": "/sp/nvidia/nccl/lib",
                   "HOROVOD_NCCL_LINK": "SHARED", "LDFLAGS": "-Wl,-rpath,/sp/nvidia/nccl/lib"}
    shell = "\n".join(ip.shell_lines(plan))
    assert "nccl_link=(/sp/nvidia/nccl/lib/libnccl.so.2 /sp/nvidia/nccl/lib/libnccl.so)" in shell


def test_gpu_plan_before_tensorflow_is_installed_names_the_wheel_to_come():
    plan = ip.decide(facts(tf_build="gpu", cuda_home="/cuda", cuda_version="12.2"))
    assert dict(plan.horovod_env)["HOROVOD_GPU_OPERATIONS"] == "NCCL"
    assert any("nvidia-nccl-cu12 wheel" in note for note in plan.notes)


def test_the_helper_parses_on_the_python_of_an_old_login_node():
    """It must run far enough on python3.6 (RHEL 8) to print the one line, not a SyntaxError."""
    ast.parse(PLAN.read_text(), feature_version=(3, 6))
    assert "from __future__ import annotations" not in PLAN.read_text()


# ----------------------------------------------------------------------------- probes, fake machines
def _exe(folder: Path, name: str, body: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("#!/bin/sh\n" + body + "\n")
    (folder / name).chmod(0o755)


@pytest.fixture
def machine(tmp_path):
    """A PATH without this machine's tools; fake_gpu() and fake_cuda() add them."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ip.NCCL_HOME_VARS + ip.CUDA_HOME_VARS + ("TF_BUILD",)}
    env["PATH"] = f"{bindir}:/usr/bin:/bin"

    class Machine:
        def fake_gpu(self, ok: bool = True):
            _exe(bindir, "nvidia-smi", 'echo "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-1)"\n'
                                        'echo "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-2)"' if ok else
                 'echo "NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver"; exit 9')

        def fake_cuda(self, release: str = "12.2") -> Path:
            home = tmp_path / f"cuda-{release}"
            _exe(home / "bin", "nvcc", f'echo "Cuda compilation tools, release {release}, V{release}.140"')
            (home / "include").mkdir()
            (home / "include" / "cuda_runtime.h").write_text("")
            (bindir / "nvcc").symlink_to(home / "bin" / "nvcc")
            return home

        def nccl_tree(self, root: Path, libname: str = "libnccl.so.2") -> Path:
            (root / "include").mkdir(parents=True)
            (root / "include" / "nccl.h").write_text("#define NCCL_MAJOR 2\n")
            (root / "lib").mkdir()
            (root / "lib" / libname).write_bytes(b"")
            return root

        def plan(self, *args: str, **extra: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, str(PLAN), "plan", *args], env={**env, **extra},
                                  capture_output=True, text=True, timeout=60)

    return Machine()


def _shell(res: subprocess.CompletedProcess) -> dict[str, object]:
    """The --shell output evaluated the way install.sh does, by bash."""
    script = res.stdout + '\nprintf "%s\\n" "$tf_build" "${hv_env[@]}" "--" "${nccl_link[@]}"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    cut = out.index("--")
    return {"tf_build": out[0], "env": dict(kv.split("=", 1) for kv in out[1:cut]), "link": out[cut + 1:]}


def test_gpu_node_with_the_nccl_wheel(machine, tmp_path):
    machine.fake_gpu()
    cuda = machine.fake_cuda("12.2")
    sp = tmp_path / "site packages"
    machine.nccl_tree(sp / "nvidia" / "nccl")
    res = machine.plan("--shell", "--site-packages", str(sp))
    assert res.returncode == 0, res.stderr
    got = _shell(res)
    assert got["tf_build"] == "gpu"
    assert got["env"]["HOROVOD_CUDA_HOME"] == str(cuda)
    assert got["env"]["HOROVOD_NCCL_INCLUDE"] == str(sp / "nvidia" / "nccl" / "include")
    assert got["link"] == [str(sp / "nvidia/nccl/lib/libnccl.so.2"), str(sp / "nvidia/nccl/lib/libnccl.so")]


def test_a_site_nccl_module_wins_over_the_wheel(machine, tmp_path):
    machine.fake_cuda("12.4")
    sp = tmp_path / "sp"
    machine.nccl_tree(sp / "nvidia" / "nccl")
    module = machine.nccl_tree(tmp_path / "nccl-2.21", libname="libnccl.so")
    res = machine.plan("--shell", "--tf-build", "gpu", "--site-packages", str(sp), NCCL_ROOT=str(module))
    got = _shell(res)
    assert got["env"]["HOROVOD_NCCL_LIB"] == str(module / "lib") and got["link"] == []
    res = machine.plan("--tf-build", "gpu", "--site-packages", str(sp), NCCL_HOME=str(tmp_path))
    assert res.returncode == 2
    assert res.stderr.strip() == f"install: NCCL_HOME={tmp_path} holds no NCCL (include/nccl.h and lib/libnccl.so): fix or unset it"


def test_login_node_without_gpus(machine):
    machine.fake_gpu(ok=False)      # nvidia-smi installed, no driver: a login node
    machine.fake_cuda("12.2")
    res = machine.plan()
    assert res.returncode == 0 and res.stdout.startswith("TensorFlow: cpu build (auto: no GPU here")
    res = machine.plan("--tf-build", "gpu")
    assert res.returncode == 0 and res.stdout.startswith("TensorFlow: gpu build (asked for (TF_BUILD=gpu))")


def test_cuda_13_toolkit_is_refused_for_a_gpu_build(machine):
    machine.fake_cuda("13.0")
    res = machine.plan("--tf-build", "gpu")
    assert res.returncode == 2 and "is CUDA 13.0, but TensorFlow 2.15.1 runs on CUDA 12" in res.stderr


def test_a_wrapper_nvcc_is_not_taken_for_the_toolkit(machine, tmp_path):
    """nvcc on PATH as a wrapper script in a bin folder of its own: its parent holds no CUDA headers."""
    home = machine.fake_cuda("12.2")
    (tmp_path / "bin" / "nvcc").unlink()
    _exe(tmp_path / "bin", "nvcc", f'exec {home}/bin/nvcc "$@"')
    res = machine.plan("--tf-build", "gpu")
    assert res.returncode == 2 and "has no include/cuda_runtime.h" in res.stderr and "set CUDA_HOME" in res.stderr
    res = machine.plan("--tf-build", "gpu", CUDA_HOME=str(home))
    assert res.returncode == 0, res.stderr


def test_python_version_on_the_command_line(machine):
    res = machine.plan("--python-version", "3.12")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and not res.stdout


def test_print_plan_installs_nothing(machine, tmp_path):
    machine.fake_gpu()
    machine.fake_cuda("12.2")
    venv = tmp_path / "no venv yet"
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:/usr/bin:/bin", VENV=str(venv), PYTHON=sys.executable,
               TF_BUILD="gpu")
    res = subprocess.run(["bash", str(INSTALL), "--print-plan"], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "nothing is installed" in res.stdout and "TensorFlow: gpu build" in res.stdout
    assert "nvidia-nccl-cu12 wheel" in res.stdout and not venv.exists()
    res = subprocess.run(["bash", str(INSTALL), "--print-plan"], env=dict(env, TF_BUILD="cuda"),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "TF_BUILD=cuda: use gpu, cpu or auto" in res.stderr
    res = subprocess.run(["bash", str(INSTALL), "--plan"], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "usage:" in res.stderr


# ----------------------------------------------------------------------------- the built Horovod
def _fake_horovod(tmp_path: Path, nccl: int) -> str:
    pkg = tmp_path / "fakehvd" / "horovod"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "tensorflow.py").write_text(f"def mpi_built():\n    return True\n\ndef gloo_built():\n    return True\n\n"
                                       f"def nccl_built():\n    return {nccl}\n")
    return str(pkg.parent)


@pytest.mark.parametrize("tf_build, nccl, rc", [("gpu", 0, 1), ("gpu", 21805, 0), ("cpu", 0, 0)])
def test_check_horovod_fails_a_gpu_build_without_nccl(tmp_path, tf_build, nccl, rc):
    env = dict(os.environ, PYTHONPATH=_fake_horovod(tmp_path, nccl))
    res = subprocess.run([sys.executable, str(PLAN), "check-horovod", "--tf-build", tf_build], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == rc, res.stderr
    assert ("+ NCCL" in res.stdout) == bool(nccl)
    if rc:
        assert "GPU build asked for, but Horovod has no NCCL operations" in res.stderr


def test_check_horovod_on_the_installed_horovod():
    """The shared environment's Horovod (CPU: MPI + Gloo) passes as a CPU build and fails as a GPU one."""
    res = subprocess.run([sys.executable, str(PLAN), "check-horovod", "--tf-build", "gpu"],
                         capture_output=True, text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert res.returncode == 1 and "TensorFlow + MPI + Gloo" in res.stdout and "no NCCL operations" in res.stderr


# ----------------------------------------------------------------------------- the Makefile's stamp
def _make_n(venv: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_BUILD", "MAKEFLAGS", "MFLAGS")}
    res = subprocess.run(["make", "-n", "install", f"VENV={venv}", *args], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_make_installs_once_per_build_and_keeps_the_build_it_made(tmp_path):
    venv = tmp_path / "venv"
    out = _make_n(venv)
    assert f"VENV={venv} TF_BUILD=auto ./tools/install.sh" in out
    (stamp,) = [shlex.split(line)[1] for line in out.splitlines() if line.startswith("touch ")]
    assert stamp.endswith("-auto")
    venv.mkdir()
    Path(stamp).touch()
    assert "install.sh" not in _make_n(venv)                    # make test again: nothing to do
    assert "TF_BUILD=gpu ./tools/install.sh" in _make_n(venv, "TF_BUILD=gpu")
    # After `make install TF_BUILD=gpu` (install.sh records the build asked for), a plain
    # `make test` keeps it and finds its stamp.
    (venv / ".tf-build").write_text("gpu\n")
    Path(stamp[: -len("auto")] + "gpu").touch()
    assert "install.sh" not in _make_n(venv)


# ----------------------------------------------------------------------------- install.sh, end to end
# The environment's interpreter, faked: pip calls are logged (with the Horovod build variables they
# see), a Horovod "build" writes the fake horovod package (with NCCL when HOROVOD_GPU_OPERATIONS=NCCL
# reaches it, unless FAKE_BUILD_DROPS_NCCL=1), and tools/install_plan.py runs on the real Python.
_FAKE_VENV_PYTHON = r"""#!/bin/bash
if [ "$1" = -m ] && [ "$2" = pip ]; then
  echo "pip ${*:3} | GPU_OPS=${HOROVOD_GPU_OPERATIONS:-} NCCL_LIB=${HOROVOD_NCCL_LIB:-} LDFLAGS=${LDFLAGS:-}" >> "$FAKE_LOG"
  if [ "$3" = show ]; then
    case " ${FAKE_INSTALLED:-} " in *" ${@: -1} "*) exit 0 ;; esac
    exit 1
  fi
  if [ "${@: -1}" = horovod ]; then
    nccl=0
    if [ "${HOROVOD_GPU_OPERATIONS:-}" = NCCL ] && [ "${FAKE_BUILD_DROPS_NCCL:-0}" = 0 ]; then nccl=21805; fi
    printf 'mpi_built = gloo_built = lambda: True\nnccl_built = lambda: %s\n' "$nccl" > "$FAKE_HVD/horovod/tensorflow.py"
  fi
  exit 0
fi
if [ "$1" = -c ]; then
  case "$2" in
    *sysconfig*) echo "$FAKE_SITE"; exit 0 ;;
    *horovod*) [ -f "$FAKE_HVD/horovod/tensorflow.py" ]; exit $? ;;
  esac
fi
PYTHONPATH=$FAKE_HVD exec "$REAL_PYTHON" "$@"
"""


@pytest.fixture
def gpu_login_node(tmp_path, machine):
    """A fake .venv with CPU TensorFlow and a CPU Horovod, on a node with a CUDA 12 toolkit and the
    NCCL wheel's layout in its site-packages; returns a function running install.sh there."""
    machine.fake_cuda("12.2")
    bindir = tmp_path / "bin"
    for cmd in ("mpicc", "mpirun", "cmake", "g++", "make", "slurmctld", "slurmd", "munged", "srun"):
        _exe(bindir, cmd, "exit 0")
    venv = tmp_path / "venv"
    _exe(venv / "bin", "python", "")
    (venv / "bin" / "python").write_text(_FAKE_VENV_PYTHON)
    site = tmp_path / "site-packages"
    machine.nccl_tree(site / "nvidia" / "nccl")
    hvd = tmp_path / "hvd" / "horovod"
    hvd.mkdir(parents=True)
    (hvd / "__init__.py").write_text("")
    (hvd / "tensorflow.py").write_text("mpi_built = gloo_built = lambda: True\nnccl_built = lambda: 0\n")
    log = tmp_path / "calls.log"

    def install(**extra: str) -> tuple[subprocess.CompletedProcess, list[str]]:
        env = dict(os.environ, PATH=f"{bindir}:/usr/bin:/bin", VENV=str(venv), FAKE_LOG=str(log),
                   FAKE_SITE=str(site), FAKE_HVD=str(hvd.parent), REAL_PYTHON=sys.executable,
                   FAKE_INSTALLED="tensorflow-cpu", **extra)
        for var in ip.NCCL_HOME_VARS + ip.CUDA_HOME_VARS:
            env.pop(var, None)
        res = subprocess.run(["bash", str(INSTALL)], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120)
        return res, (log.read_text().splitlines() if log.exists() else [])

    install.venv = venv
    install.site = site
    return install


def test_install_switches_a_cpu_environment_to_the_gpu_build_with_nccl(gpu_login_node):
    res, calls = gpu_login_node(TF_BUILD="gpu")
    assert res.returncode == 0, res.stderr
    assert "removing tensorflow-cpu (switching to the gpu build)" in res.stdout
    pips = [c.split(" | ")[0] for c in calls]
    assert "pip uninstall -y -q tensorflow-cpu" in pips
    assert any(p.endswith("-e .[gpu,hdf5,dev]") for p in pips)
    assert "pip install -q -c constraints.txt --force-reinstall --no-deps tensorflow" in pips
    (build,) = [c for c in calls if c.split(" | ")[0].endswith(" horovod")]
    lib = gpu_login_node.site / "nvidia" / "nccl" / "lib"
    assert "--no-cache-dir" in build and f"GPU_OPS=NCCL NCCL_LIB={lib} LDFLAGS=-Wl,-rpath,{lib}" in build
    assert os.readlink(lib / "libnccl.so") == "libnccl.so.2"
    assert "Horovod built with TensorFlow + MPI + Gloo + NCCL" in res.stdout
    assert (gpu_login_node.venv / ".tf-build").read_text().strip() == "gpu"


def test_install_fails_loudly_when_the_gpu_build_lacks_nccl(gpu_login_node):
    res, _ = gpu_login_node(TF_BUILD="gpu", FAKE_BUILD_DROPS_NCCL="1")
    assert res.returncode == 1
    assert "GPU build asked for, but Horovod has no NCCL operations" in res.stderr
    assert "install: done" not in res.stdout and not (gpu_login_node.venv / ".tf-build").exists()


def test_install_auto_on_a_login_node_keeps_the_cpu_build(gpu_login_node):
    res, calls = gpu_login_node()
    assert res.returncode == 0, res.stderr
    assert "TensorFlow: cpu build; auto: no GPU here" in res.stdout
    assert not [c for c in calls if " uninstall " in c or c.split(" | ")[0].endswith(" horovod")]
