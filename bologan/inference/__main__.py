"""``python -m bologan.inference``: not a second way in. Old scripts that run the package get the
one command instead of silence."""
import sys

from common.errors import EXIT_USER_ERROR

print("error: the inference benchmark runs as: python -m bologan.bench --inference ...", file=sys.stderr)
sys.exit(EXIT_USER_ERROR)
