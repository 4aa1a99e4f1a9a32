"""The decisions of tools/install.sh, apart from the installing: which TensorFlow build, which
CUDA toolkit and NCCL Horovod is built against, and whether the Horovod that came out has what
the build needs. install.sh runs it; tests drive `decide` with made-up facts and the command
line with fake environments (a fake nvidia-smi on PATH, a fake site-packages, NCCL_HOME).

    python tools/install_plan.py plan --tf-build auto [--site-packages DIR] [--shell]
    python tools/install_plan.py check-horovod --tf-build gpu

`plan` prints the plan (with --shell: bash assignments for install.sh) or one line saying what
to fix, with exit status 2. `check-horovod` prints what the installed Horovod was built with and
exits 1 when a GPU build lacks NCCL operations.

This file runs under whatever python3 a login node offers (RHEL 8's is 3.6): it must parse there,
so that an unsupported Python gets the one line below and not a syntax error.
"""
import argparse
import os
import shlex
import shutil
import subprocess
import sys
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

# The versions are pinned in constraints.txt; what follows are facts about those pins, to be
# revised with them. The one Python the pins install on: TensorFlow 2.15 has wheels for 3.9-3.11
# only, and the pinned pandas 3.0 / scipy 1.16 (and tomllib) need 3.11.
SUPPORTED_PYTHON = (3, 11)
TF_WHEEL_PYTHONS = "3.9-3.11"
CONSTRAINTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "constraints.txt")
TF_BUILDS = ("auto", "gpu", "cpu")
# Where a site's NCCL module says where it is, in the order they are tried.
NCCL_HOME_VARS = ("HOROVOD_NCCL_HOME", "NCCL_HOME", "NCCL_ROOT")
CUDA_HOME_VARS = ("HOROVOD_CUDA_HOME", "CUDA_HOME", "CUDA_PATH")
# TensorFlow 2.15's GPU wheel is built with CUDA 12.2: Horovod must be compiled by a CUDA 12 nvcc
# (two CUDA runtimes in one process do not mix).
CUDA_MAJOR = 12
# The NCCL wheel TensorFlow's and-cuda extra installs: <site-packages>/nvidia/nccl/{include,lib}.
NCCL_WHEEL = "nvidia-nccl-cu12"


class PlanError(Exception):
    """A choice the install cannot make: one line saying what to do (exit status 2)."""


class Nccl(NamedTuple):
    include_dir: str
    lib_dir: str
    source: str                      # where it was found, in words
    link: Optional[Tuple[str, str]]  # (target, link name) to create: the wheel ships only libnccl.so.2


class Facts(NamedTuple):
    python_version: Tuple[int, int]
    tf_build: str                    # as asked: auto, gpu or cpu
    gpu_seen: Optional[str]          # why this machine looks like a GPU machine, or None
    cuda_home: Optional[str]         # folder holding bin/nvcc
    cuda_source: str
    cuda_version: Optional[str]      # "12.2" from nvcc --version, None if it did not say
    cuda_headers: bool               # cuda_home has include/cuda_runtime.h
    nccl: Optional[Nccl]
    nccl_problem: Optional[str]      # an NCCL variable pointing at a folder without NCCL
    site_packages_known: bool        # False before TensorFlow (and its NCCL wheel) is installed


class Plan(NamedTuple):
    tf_build: str                    # gpu or cpu
    reason: str
    horovod_env: List[Tuple[str, str]]
    nccl: Optional[Nccl]
    cuda_home: Optional[str]
    notes: List[str]


def pinned_tensorflow(path: str = CONSTRAINTS) -> str:
    """'TensorFlow 2.15.1' as constraints.txt pins it ('TensorFlow' when the file says nothing)."""
    try:
        with open(path) as fh:
            for line in fh:
                name, sep, version = line.split("#")[0].strip().partition("==")
                if sep and name.strip() == "tensorflow":
                    return "TensorFlow " + version.strip()
    except OSError:
        pass
    return "TensorFlow"


def python_problem(version: Tuple[int, int]) -> Optional[str]:
    if tuple(version[:2]) == SUPPORTED_PYTHON:
        return None
    want = "%d.%d" % SUPPORTED_PYTHON
    return ("Python %d.%d cannot install the pinned versions: %s has wheels for Python %s only and the pinned "
            "pandas/scipy need %s; install Python %s ('module load python/%s', 'apt-get install python%s-venv' or "
            "'conda create -n bologan python=%s'), remove .venv if it was made with another Python, and run "
            "'make install PYTHON=python%s'"
            % (version[0], version[1], pinned_tensorflow(), TF_WHEEL_PYTHONS, want, want, want, want, want, want))


def decide(facts: Facts) -> Plan:
    """The plan for these facts, or PlanError with the one line to print."""
    problem = python_problem(facts.python_version)
    if problem:
        raise PlanError(problem)
    if facts.tf_build not in TF_BUILDS:
        raise PlanError("TF_BUILD=%s: use gpu, cpu or auto (make install TF_BUILD=gpu)" % facts.tf_build)
    if facts.tf_build == "auto":
        # Only a GPU seen here decides for the GPU build: a CUDA toolkit alone (a login node's
        # module, a workstation's leftover) says nothing about the machine the runs will use.
        if facts.gpu_seen:
            build = "gpu"
            reason = "auto: " + facts.gpu_seen
        else:
            build = "cpu"
            reason = ("auto: no GPU here (nvidia-smi); where the runs will have GPUs (a GPU cluster's login "
                      "node) ask for the GPU build: make install TF_BUILD=gpu")
    else:
        build = facts.tf_build
        reason = "asked for (TF_BUILD=%s)" % build
    if build == "cpu":
        return Plan("cpu", reason, [], None, None, ["Horovod: TensorFlow + MPI + Gloo (no NCCL: CPU build)"])
    if not facts.cuda_home:
        raise PlanError("GPU build (%s) needs a CUDA 12 toolkit: Horovod compiles its NCCL operations with nvcc, "
                        "and none was found (nvcc on PATH, %s); load one, e.g. 'module load cuda/12.2', and run "
                        "again (or TF_BUILD=cpu)" % (reason, ", ".join(CUDA_HOME_VARS)))
    if facts.cuda_version and facts.cuda_version.split(".")[0] != str(CUDA_MAJOR):
        raise PlanError("GPU build: the CUDA toolkit found (%s) is CUDA %s, but %s runs on CUDA %d: "
                        "load a CUDA %d module (e.g. 'module load cuda/12.2') or set CUDA_HOME to one"
                        % (facts.cuda_source, facts.cuda_version, pinned_tensorflow(), CUDA_MAJOR, CUDA_MAJOR))
    if not facts.cuda_headers:
        raise PlanError("GPU build: the CUDA toolkit folder %s (%s) has no include/cuda_runtime.h (a wrapper "
                        "script for nvcc?): set CUDA_HOME to the toolkit's folder" % (facts.cuda_home, facts.cuda_source))
    if facts.nccl_problem:
        raise PlanError(facts.nccl_problem)
    env = [("HOROVOD_GPU_OPERATIONS", "NCCL"), ("HOROVOD_CUDA_HOME", facts.cuda_home)]
    notes = ["Horovod: TensorFlow + MPI + Gloo + NCCL; the install fails if NCCL operations are missing"]
    if facts.nccl is None:
        if facts.site_packages_known:
            raise PlanError("GPU build: no NCCL found (not in %s from the %s wheel, nor in %s): load your site's "
                            "NCCL module or set NCCL_HOME to a folder with include/nccl.h and lib/libnccl.so"
                            % ("<site-packages>/nvidia/nccl", NCCL_WHEEL, ", ".join(NCCL_HOME_VARS)))
        notes.append("NCCL: from the %s wheel that tensorflow[and-cuda] installs (looked up after that)" % NCCL_WHEEL)
        return Plan("gpu", reason, env, None, facts.cuda_home, notes)
    # Shared linking against the NCCL found (the wheel has no static library); the run path lets
    # Horovod's library find it at run time without LD_LIBRARY_PATH.
    env += [("HOROVOD_NCCL_INCLUDE", facts.nccl.include_dir), ("HOROVOD_NCCL_LIB", facts.nccl.lib_dir),
            ("HOROVOD_NCCL_LINK", "SHARED"), ("LDFLAGS", "-Wl,-rpath," + facts.nccl.lib_dir)]
    notes.append("NCCL: %s (%s)" % (facts.nccl.lib_dir, facts.nccl.source))
    return Plan("gpu", reason, env, facts.nccl, facts.cuda_home, notes)


# ----------------------------------------------------------------------------- probes
def _has_nccl_lib(lib_dir: str) -> Optional[str]:
    for name in ("libnccl.so", "libnccl.so.2"):
        if os.path.exists(os.path.join(lib_dir, name)):
            return name
    return None


def _nccl_in(home: str, source: str) -> Optional[Nccl]:
    include = os.path.join(home, "include")
    if not os.path.isfile(os.path.join(include, "nccl.h")):
        return None
    for lib in ("lib", "lib64", os.path.join("lib", "x86_64-linux-gnu")):
        lib_dir = os.path.join(home, lib)
        found = _has_nccl_lib(lib_dir)
        if found:
            link = None
            if found != "libnccl.so":    # the linker looks for libnccl.so
                link = (os.path.join(lib_dir, found), os.path.join(lib_dir, "libnccl.so"))
            return Nccl(include, lib_dir, source, link)
    return None


def find_nccl(env: Dict[str, str], site_packages: List[str],
              fallbacks: List[Tuple[str, str]]) -> Tuple[Optional[Nccl], Optional[str]]:
    """NCCL from a module's variable (first), else from the pip wheel (the NCCL TensorFlow itself
    loads), else from ``fallbacks`` ((folder, source) pairs); (None, problem) when a variable
    names a folder without NCCL."""
    for var in NCCL_HOME_VARS:
        home = env.get(var)
        if home:
            found = _nccl_in(home, "%s=%s" % (var, home))
            if found is None:
                return None, ("%s=%s holds no NCCL (include/nccl.h and lib/libnccl.so): fix or unset it"
                              % (var, home))
            return found, None
    for sp in site_packages:
        found = _nccl_in(os.path.join(sp, "nvidia", "nccl"), "pip wheel %s in %s" % (NCCL_WHEEL, sp))
        if found:
            return found, None
    for home, source in fallbacks:
        found = _nccl_in(home, source)
        if found:
            return found, None
    return None, None


def find_cuda(env: Dict[str, str], which: Callable[[str], Optional[str]]) -> Tuple[Optional[str], str]:
    for var in CUDA_HOME_VARS:
        home = env.get(var)
        if home and os.access(os.path.join(home, "bin", "nvcc"), os.X_OK):
            return home, "%s=%s" % (var, home)
    nvcc = which("nvcc")
    if nvcc:
        return os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "nvcc on PATH: %s" % nvcc
    return None, ""


def nvcc_version(cuda_home: str) -> Optional[str]:
    """'12.2' from 'nvcc --version' ('Cuda compilation tools, release 12.2, V12.2.140')."""
    try:
        res = subprocess.run([os.path.join(cuda_home, "bin", "nvcc"), "--version"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, universal_newlines=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for word in res.stdout.replace(",", " ").split():
        if word.startswith("V") and word[1:2].isdigit():
            return ".".join(word[1:].split(".")[:2])
    return None


def gpu_seen(which: Callable[[str], Optional[str]]) -> Optional[str]:
    smi = which("nvidia-smi")
    if not smi:
        return None
    try:
        res = subprocess.run([smi, "-L"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             universal_newlines=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    gpus = [line for line in res.stdout.splitlines() if line.startswith("GPU ")]
    if res.returncode != 0 or not gpus:
        return None
    return "nvidia-smi lists %d GPU(s)" % len(gpus)


def gather(tf_build: str, site_packages: Optional[List[str]], env: Dict[str, str],
           which: Callable[[str], Optional[str]] = shutil.which,
           python_version: Optional[Tuple[int, int]] = None, system_prefix: str = "/usr") -> Facts:
    cuda_home, cuda_source = find_cuda(env, which)
    fallbacks = [(cuda_home, "in the CUDA toolkit")] if cuda_home else []
    fallbacks.append((system_prefix, "system (%s)" % system_prefix))
    nccl, problem = find_nccl(env, site_packages or [], fallbacks)
    version = python_version or (sys.version_info[0], sys.version_info[1])
    cuda_version = nvcc_version(cuda_home) if cuda_home else None
    headers = bool(cuda_home) and os.path.isfile(os.path.join(cuda_home, "include", "cuda_runtime.h"))
    return Facts(version, tf_build, gpu_seen(which), cuda_home, cuda_source, cuda_version, headers, nccl, problem,
                 site_packages is not None)


# ----------------------------------------------------------------------------- output
def shell_lines(plan: Plan) -> List[str]:
    """bash for install.sh to eval: tf_build, hv_env (KEY=VALUE words) and nccl_link (target, name)."""
    q = shlex.quote
    lines = ["tf_build=%s" % q(plan.tf_build), "tf_reason=%s" % q(plan.reason), "hv_env=()", "nccl_link=()"]
    lines += ["hv_env+=(%s)" % q("%s=%s" % kv) for kv in plan.horovod_env]
    if plan.nccl is not None and plan.nccl.link:
        lines.append("nccl_link=(%s %s)" % (q(plan.nccl.link[0]), q(plan.nccl.link[1])))
    return lines


def text_lines(plan: Plan) -> List[str]:
    lines = ["TensorFlow: %s build (%s)" % (plan.tf_build, plan.reason)]
    if plan.cuda_home:
        lines.append("CUDA toolkit: %s" % plan.cuda_home)
    lines += plan.notes
    if plan.nccl is not None and plan.nccl.link:
        lines.append("NCCL: links %s -> %s for the linker" % (plan.nccl.link[1], os.path.basename(plan.nccl.link[0])))
    if plan.horovod_env:
        lines.append("Horovod build environment: " + " ".join("%s=%s" % kv for kv in plan.horovod_env))
    return lines


def check_horovod(tf_build: str) -> int:
    """What the installed Horovod was built with; 1 when a GPU build has no NCCL operations."""
    try:
        import horovod.tensorflow as hvd
    except ImportError as exc:
        print("install: Horovod does not import (%s)" % exc, file=sys.stderr)
        return 1
    built = [("MPI", hvd.mpi_built()), ("Gloo", hvd.gloo_built()), ("NCCL", hvd.nccl_built())]
    print("install: Horovod built with TensorFlow" + "".join(" + " + name for name, ok in built if ok))
    if tf_build == "gpu" and not hvd.nccl_built():
        print("install: GPU build asked for, but Horovod has no NCCL operations (horovod.tensorflow.nccl_built() "
              "is 0): its GPU all-reduce would go through MPI on the host; see the Horovod build log above "
              "(CUDA toolkit and NCCL found?), then run make install TF_BUILD=gpu again", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="tools/install_plan.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command")
    pp = sub.add_parser("plan", help="print the install plan")
    pp.add_argument("--tf-build", default="auto")
    pp.add_argument("--site-packages", action="append",
                    help="site-packages folder of the environment (once TensorFlow is installed)")
    pp.add_argument("--shell", action="store_true", help="bash assignments for install.sh")
    pp.add_argument("--python-version", help="X.Y to decide for instead of this interpreter's (tests)")
    pc = sub.add_parser("check-horovod", help="fail when a GPU build's Horovod lacks NCCL")
    pc.add_argument("--tf-build", required=True, choices=("gpu", "cpu"))
    args = p.parse_args(argv)
    if args.command == "check-horovod":
        return check_horovod(args.tf_build)
    if args.command != "plan":
        p.print_usage(sys.stderr)
        return 2
    version = None
    if args.python_version:
        major, minor = args.python_version.split(".")[:2]
        version = (int(major), int(minor))
    try:
        plan = decide(gather(args.tf_build, args.site_packages, dict(os.environ), python_version=version))
    except PlanError as exc:
        print("install: %s" % exc, file=sys.stderr)
        return 2
    print("\n".join(shell_lines(plan) if args.shell else text_lines(plan)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
