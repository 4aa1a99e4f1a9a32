#!/bin/bash
# A stand-in for the Python interpreter in launcher tests: it prints its arguments and, for the
# entry points the launchers start, leaves the files the real ones would (on rank 0 only).
#   FAKE_PYTHON_LOG   file that collects one line of arguments per call
#   FAKE_INTERRUPT=1  scaling.run without --resume exits 3 (checkpointed) instead of completing
#   FAKE_FAIL_RUN=S   scaling.run whose --out contains S fails with exit 1
#   FAKE_SLEEP_S=N    every call but scaling.preflight sleeps N seconds first
#   FAKE_PREFLIGHT_RC=N  scaling.preflight exits N (default 0) on every rank
#   FAKE_PREFLIGHT_SLEEP_S=N  scaling.preflight sleeps N seconds first
#   FAKE_RUN_RC=N     scaling.run writes run.json as the trainer does, with status FAKE_RUN_STATUS
#                     (default failed), and exits N
#   FAKE_WAIT_SIGNAL=1  scaling.run without --resume waits (up to 60 s) for SIGUSR1/SIGTERM,
#                     then exits 3 like the real trainer after its checkpoint
echo "fake-python: $*"
if [ -n "${FAKE_PYTHON_LOG:-}" ]; then printf '%s\n' "$*" >> "$FAKE_PYTHON_LOG"; fi
rank=${SLURM_PROCID:-${OMPI_COMM_WORLD_RANK:-0}}
[ "$1" = "-m" ] || exit 0
module=$2; shift 2
out=""; resume=0; positional=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift ;;
    --resume) resume=1 ;;
    -*) ;;
    *) [ -z "$positional" ] && positional=$1 ;;
  esac
  shift
done
if [ "$module" = scaling.preflight ]; then
  [ -n "${FAKE_PREFLIGHT_SLEEP_S:-}" ] && sleep "$FAKE_PREFLIGHT_SLEEP_S"
  [ "${FAKE_PREFLIGHT_RC:-0}" = 0 ] || echo "fake preflight: rank $rank: a measurement would be wrong" >&2
  exit "${FAKE_PREFLIGHT_RC:-0}"
fi
[ -n "${FAKE_SLEEP_S:-}" ] && sleep "$FAKE_SLEEP_S"
[ "$rank" = 0 ] || exit 0
case "$module" in
  scaling.run)
    mkdir -p "$out"
    if [ -n "${FAKE_FAIL_RUN:-}" ] && [ "${out#*"$FAKE_FAIL_RUN"}" != "$out" ]; then
      echo '{"status": "failed"}' > "$out/run.json"; echo "fake failure for $out" >&2; exit 1
    fi
    if [ -n "${FAKE_RUN_RC:-}" ]; then
      printf '{\n  "status": "%s",\n  "exit_status": %s\n}\n' "${FAKE_RUN_STATUS:-failed}" "$FAKE_RUN_RC" > "$out/run.json"; exit "$FAKE_RUN_RC"
    fi
    if [ "${FAKE_INTERRUPT:-0}" = 1 ] && [ "$resume" = 0 ]; then
      echo '{"status": "interrupted"}' > "$out/run.json"; exit 3
    fi
    if [ "${FAKE_WAIT_SIGNAL:-0}" = 1 ] && [ "$resume" = 0 ]; then
      echo '{"status": "running"}' > "$out/run.json"
      trap 'echo "{\"status\": \"interrupted\"}" > "$out/run.json"; exit 3' USR1 TERM
      for _ in $(seq 600); do sleep 0.1; done
      exit 1
    fi
    echo "{\"status\": \"completed\", \"resumed\": $resume}" > "$out/run.json" ;;
  scaling.allreduce_bench) echo '{}' > "$out" ;;
  analysis) mkdir -p "$out" && echo "# report of $positional" > "$out/report.md" ;;
esac
exit 0
