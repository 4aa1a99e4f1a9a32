#!/bin/bash
# Entry point of the bologan-scaling image (its %runscript runs this file). It works as a plain
# script outside the container too, which is how the tests check the dispatch.
#
# Every subcommand maps onto a module entry point of the package:
#   init, train, bestiter   the BoloGAN workflow (data, one GAN, best checkpoint)
#   scale, study, analyse   the scaling measurements and their report
#
# Environment:
#   PYTHON        interpreter (default: python3; the image sets its own)
#   BOLOGAN_WORK  working folder of init/train/bestiter (default: the current directory)
#   BOLOGAN_DATA  folder of <particle>.parquet shower files (default: $BOLOGAN_WORK/data)
set -euo pipefail

PYTHON=${PYTHON:-python3}
WORK=${BOLOGAN_WORK:-$PWD}
DATA=${BOLOGAN_DATA:-$WORK/data}
PARTICLES="photons pions"

usage() {
  cat <<EOF
usage: apptainer run [--nv] [--bind DATA_DIR] IMAGE COMMAND [ARGS...]
   or: bash apptainer/runscript.sh COMMAND [ARGS...]

commands:
  init [--synthetic N]           create data/, train/ and results/ in the working folder;
                                 with --synthetic, write N synthetic showers per particle
                                 to data/<particle>.parquet (skipped when the file exists)
  train PARTICLE [ARGS...]       train one GAN (photons or pions) into train/PARTICLE with
                                 data/PARTICLE.parquet (python -m bologan.train); continues
                                 from the last checkpoint when train/PARTICLE has one
  bestiter PARTICLE [ARGS...]    score the checkpoints of train/PARTICLE by chi2/NDF against
                                 data/PARTICLE_test.parquet (or data/PARTICLE.parquet) and
                                 keep the best (python -m bologan.evaluate)
  scale [ARGS...]                one scaling run (python -m scaling.run); start it with
                                 srun or mpirun for several ranks
  study [ARGS...]                a local scaling study with mpirun (python -m launch.study)
  analyse [ARGS...]              scaling/energy report from run directories (python -m analysis)
  help                           this message

ARGS are passed on to the module; '<command> --help' shows them.
working folder: BOLOGAN_WORK (now: $WORK); data: BOLOGAN_DATA (now: $DATA)
EOF
}

die_usage() {
  echo "error: $1" >&2
  usage >&2
  exit 2
}

check_particle() {
  local p=${1:-}
  [ -n "$p" ] || die_usage "$2 needs a particle: photons or pions"
  case " $PARTICLES " in
    *" $p "*) ;;
    *) die_usage "unknown particle '$p': use photons or pions" ;;
  esac
}

# True when the arguments already name an output folder (then the user's choice wins).
has_out() {
  local a
  for a in "$@"; do
    case "$a" in --out|--out=*) return 0 ;; esac
  done
  return 1
}

cmd_init() {
  local events=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --synthetic) [ $# -ge 2 ] || die_usage "--synthetic needs a number of showers"; events=$2; shift 2 ;;
      --synthetic=*) events=${1#*=}; shift ;;
      *) die_usage "init: unknown argument '$1'" ;;
    esac
  done
  case "$events" in ''|*[!0-9]*) [ -z "$events" ] || die_usage "--synthetic needs a positive integer" ;; esac
  mkdir -p "$WORK/train" "$WORK/results" "$DATA"
  echo "init: working folder $WORK (data in $DATA)"
  local p
  for p in $PARTICLES; do
    if [ -f "$DATA/$p.parquet" ]; then
      echo "init: $DATA/$p.parquet is there"
    elif [ -n "$events" ]; then
      "$PYTHON" -m bologan.data generate --particle "$p" --events "$events" --seed 10 --out "$DATA/$p.parquet"
    else
      echo "init: no $DATA/$p.parquet; import CaloChallenge files with"
      echo "        $PYTHON -m bologan.data convert --from hdf5 --particle $p FILE.hdf5 --out $DATA/$p.parquet"
      echo "      or run 'init --synthetic 20000' for synthetic showers"
    fi
  done
}

cmd_train() {
  check_particle "${1:-}" train
  local p=$1
  shift
  local extra=()
  if ! has_out "$@"; then
    local out="$WORK/train/$p"
    extra+=(--out "$out")
    if [ -n "$(ls -A "$out/checkpoints" 2>/dev/null)" ]; then
      echo "train: $out has checkpoints; continuing from the latest (delete it to start over)" >&2
      extra+=(--resume)
    fi
  fi
  if [ -f "$DATA/$p.parquet" ]; then
    extra+=(--data "$DATA/$p.parquet")
  else
    echo "train: no $DATA/$p.parquet; training on synthetic showers (see 'init')" >&2
  fi
  exec "$PYTHON" -m bologan.train --particle "$p" "${extra[@]}" "$@"
}

cmd_bestiter() {
  check_particle "${1:-}" bestiter
  local p=$1
  shift
  local ref=""
  for f in "$DATA/${p}_test.parquet" "$DATA/$p.parquet"; do
    if [ -f "$f" ]; then ref=$f; break; fi
  done
  [ -n "$ref" ] || { echo "error: bestiter needs reference showers: $DATA/${p}_test.parquet or $DATA/$p.parquet" >&2; exit 2; }
  exec "$PYTHON" -m bologan.evaluate "$WORK/train/$p" --reference "$ref" "$@"
}

command=${1:-}
[ $# -gt 0 ] && shift
case "$command" in
  init) cmd_init "$@" ;;
  train) cmd_train "$@" ;;
  bestiter) cmd_bestiter "$@" ;;
  scale) exec "$PYTHON" -m scaling.run "$@" ;;
  study) exec "$PYTHON" -m launch.study "$@" ;;
  analyse|analyze) exec "$PYTHON" -m analysis "$@" ;;
  help|-h|--help) usage ;;
  "") die_usage "no command given" ;;
  *) die_usage "unknown command '$command'" ;;
esac
