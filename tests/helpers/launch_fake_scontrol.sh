#!/bin/bash
# A stand-in for scontrol in launcher tests: logs its arguments.
if [ -n "${FAKE_SLURM_LOG:-}" ]; then printf 'scontrol %s\n' "$*" >> "$FAKE_SLURM_LOG"; fi
exit 0
