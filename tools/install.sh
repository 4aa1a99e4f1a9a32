#!/usr/bin/env bash
# Installs everything `make test` and `make study` need into .venv/ (idempotent).
# System packages come from apt when we are root; otherwise we say exactly what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

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
pip=("$VENV/bin/python" -m pip install -q -c constraints.txt)
"$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel packaging

gpu=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then gpu=1; fi
if [ "$gpu" = 1 ]; then tf_extra=gpu; else tf_extra=cpu; fi
echo "install: Python packages (TensorFlow: $tf_extra build)"
"${pip[@]}" -e ".[${tf_extra},hdf5,dev]"

if ! "$VENV/bin/python" -c "import horovod.tensorflow" >/dev/null 2>&1; then
  echo "install: building Horovod with TensorFlow + MPI + Gloo (a few minutes)"
  hv_env=(HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1
          HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1)
  if [ "$gpu" = 1 ] && command -v nvcc >/dev/null 2>&1; then hv_env+=(HOROVOD_GPU_OPERATIONS=NCCL); fi
  "$VENV/bin/python" -m pip install -q cloudpickle psutil pyyaml cffi
  env "${hv_env[@]}" "${pip[@]}" --no-build-isolation "horovod"
fi
"$VENV/bin/horovodrun" --check-build | sed -n '1,20p' | grep -E "TensorFlow|MPI|Gloo" | tr -s ' ' || true
echo "install: done"
