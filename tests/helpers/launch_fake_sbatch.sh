#!/bin/bash
# A stand-in for sbatch in launcher tests: logs its arguments and answers job ids 101, 102, ...
#   FAKE_SLURM_LOG  file collecting one line per call: "sbatch <all arguments>"
#   FAKE_SBATCH_RC  exit code with --wait (default 0)
log=${FAKE_SLURM_LOG:?set FAKE_SLURM_LOG}
printf 'sbatch %s\n' "$*" >> "$log"
n=$(grep -c '^sbatch ' "$log")
echo "$((100 + n));testcluster"
for a in "$@"; do [ "$a" = --wait ] && exit "${FAKE_SBATCH_RC:-0}"; done
exit 0
