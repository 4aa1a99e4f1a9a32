#!/bin/bash
# A stand-in for srun in launcher tests: logs its options, then runs the command once (rank 0).
#   FAKE_SLURM_LOG  file collecting one line per call: "srun <all arguments>"
if [ -n "${FAKE_SLURM_LOG:-}" ]; then printf 'srun %s\n' "$*" >> "$FAKE_SLURM_LOG"; fi
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done
exec "$@"
