#!/usr/bin/env bash
# Creates (once) the cached venv with the Python packages of scripts/python/requirements.txt
# and prints its python. Re-installs when the requirements change.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${LAKECTL_CACHE:-$HOME/.cache/lakectl}/venvs/py
REQ="$ROOT/scripts/python/requirements.txt"
stamp="$VENV/.requirements"
if ! cmp -s "$REQ" "$stamp" 2>/dev/null; then
  echo "[python] installing $(grep -vc '^#' "$REQ") packages into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ" >&2
  cp "$REQ" "$stamp"
fi
echo "$VENV/bin/python"
