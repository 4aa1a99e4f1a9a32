#!/usr/bin/env bash
# Installs everything `make test` and `make study` need into .venv/ (idempotent).
#
#   tools/install.sh                 install (what `make install` runs)
#   tools/install.sh --print-plan    say what would be installed and why; install nothing
#
#   TF_BUILD=gpu|cpu|auto  TensorFlow build, and Horovod with NCCL (gpu) or without (cpu).
#                          auto (default): gpu only where nvidia-smi lists a GPU, so ask for gpu
#                          on a cluster's login node. A gpu build needs a CUDA 12 toolkit (nvcc:
#                          'module load cuda') and finds NCCL in NCCL_HOME / NCCL_ROOT /
#                          HOROVOD_NCCL_HOME (a site module) or in the nvidia-nccl-cu12 wheel that
#                          TensorFlow installs; it fails when Horovod ends up without NCCL.
#   PYTHON=python3.11      interpreter the environment is made from (Python 3.11 only).
# The decisions live in tools/install_plan.py; system packages come from apt when we are root,
# otherwise we say exactly what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
TF_BUILD=${TF_BUILD:-auto}
print_plan=0
case "${1:-}" in
  --print-plan) print_plan=1 ;;
  "") ;;
  *) echo "usage: tools/install.sh [--print-plan]   (TF_BUILD=gpu|cpu|auto, PYTHON=python3.11)" >&2; exit 2 ;;
esac

# The interpreter that decides: the environment's own once it exists (its Python is what counts).
if [ -x "$VENV/bin/python" ]; then plan_py=$VENV/bin/python; else plan_py=$PY; fi
if ! command -v "$plan_py" >/dev/null 2>&1; then
  echo "install: $plan_py not found: install Python 3.11 ('module load python/3.11' or" \
       "'apt-get install python3.11-venv') and run 'make install PYTHON=python3.11'" >&2
  exit 2
fi
site_packages() { "$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
site=()
if [ -x "$VENV/bin/python" ]; then site=(--site-packages "$(site_packages)"); fi

if [ "$print_plan" = 1 ]; then
  echo "install plan for $VENV with $plan_py (TF_BUILD=$TF_BUILD); nothing is installed:"
  exec "$plan_py" tools/install_plan.py plan --tf-build "$TF_BUILD" ${site[@]+"${site[@]}"}
fi
# Sets tf_build, tf_reason, hv_env (Horovod's build variables) and nccl_link; one line and exit 2
# when the choice cannot be made (a Python without TensorFlow 2.15 wheels, a GPU build without CUDA).
plan=$("$plan_py" tools/install_plan.py plan --tf-build "$TF_BUILD" --shell ${site[@]+"${site[@]}"}) || exit $?
eval "$plan"

need_cmds=(mpicc mpirun cmake g++ make)
slurm_cmds=(slurmctld slurmd munged srun)
apt_pkgs=(openmpi-bin libopenmpi-dev cmake g++ make slurmctld slurmd slurm-client munge)

missing=()
for c in "${need_cmds[@]}" "${slurm_cmds[@]}"; do
  command -v "$c" >/dev/null 2>&1 || [ -x "/usr/sbin/$c" ] || missing+=("$c")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "install: apt packages for: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
  else
    hard=()
    for c in "${missing[@]}"; do case " ${need_cmds[*]} " in *" $c "*) hard+=("$c");; esac; done
    if [ ${#hard[@]} -gt 0 ]; then
      echo "install: missing commands: ${hard[*]}." >&2
      echo "  Debian/Ubuntu (as root): apt-get install ${apt_pkgs[*]}" >&2
      echo "  On a cluster: load an MPI, CMake and GCC module first, e.g. 'module load openmpi cmake gcc'." >&2
      exit 1
    fi
    echo "install: Slurm daemons not found (${missing[*]}); the 'slurm' tests will be skipped."
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
py=$VENV/bin/python
pip=("$py" -m pip install -q -c constraints.txt)
"$py" -m pip install -q --upgrade pip setuptools wheel packaging

# Both TensorFlow flavours install the same files: switching removes the other one first, then
# reinstalls the one wanted (the removal took shared files with it) and rebuilds Horovod.
if [ "$tf_build" = gpu ]; then tf_dist=tensorflow; other_dist=tensorflow-cpu; else tf_dist=tensorflow-cpu; other_dist=tensorflow; fi
switched=0
if "$py" -m pip show -q "$other_dist" >/dev/null 2>&1; then
  echo "install: removing $other_dist (switching to the $tf_build build)"
  "$py" -m pip uninstall -y -q "$other_dist"
  switched=1
fi
echo "install: Python packages (TensorFlow: $tf_build build; $tf_reason)"
"${pip[@]}" -e ".[${tf_build},hdf5,dev]"
if [ "$switched" = 1 ]; then "${pip[@]}" --force-reinstall --no-deps "$tf_dist"; fi

if [ "$tf_build" = gpu ]; then
  # Now that TensorFlow brought its NCCL wheel, decide where Horovod's NCCL comes from.
  plan=$("$py" tools/install_plan.py plan --tf-build gpu --shell --site-packages "$(site_packages)") || exit $?
  eval "$plan"
  if [ ${#nccl_link[@]} -eq 2 ] && [ ! -e "${nccl_link[1]}" ]; then
    ln -s "$(basename "${nccl_link[0]}")" "${nccl_link[1]}"   # the linker looks for libnccl.so
  fi
fi

rebuild=$switched
"$py" -c "import horovod.tensorflow" >/dev/null 2>&1 || rebuild=1
if [ "$tf_build" = gpu ] && ! "$py" tools/install_plan.py check-horovod --tf-build gpu >/dev/null 2>&1; then rebuild=1; fi
if [ "$rebuild" = 1 ]; then
  echo "install: building Horovod with TensorFlow + MPI + Gloo$([ "$tf_build" = gpu ] && echo " + NCCL") (a few minutes)"
  hv_env+=(HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1
           HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1)
  "$py" -m pip install -q cloudpickle psutil pyyaml cffi
  # No wheel cache: a Horovod wheel built earlier (without NCCL) would otherwise be reused.
  env "${hv_env[@]}" "${pip[@]}" --no-build-isolation --no-cache-dir --force-reinstall --no-deps horovod
fi
# Fails (exit 1, one line) when a GPU build's Horovod has no NCCL operations.
"$py" tools/install_plan.py check-horovod --tf-build "$tf_build"
echo "$TF_BUILD" > "$VENV/.tf-build"   # what was asked for: `make` keeps it (see the Makefile)
echo "install: done"
