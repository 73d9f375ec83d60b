#!/usr/bin/env bash
# The one test command: installs what the tests need, starts the service stack empty,
# runs every test against it, and stops the services even when tests fail.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# Build output lives outside the clone so fresh clones (CI) reuse it.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lakectl-target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# Backtraces on, as on CI: some libraries wrap their errors differently when they capture one.
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}

bash scripts/install-deps.sh
# The Python that reads our Delta tables as "another engine" in the tests.
LAKECTL_TEST_PYTHON=$(bash scripts/python-env.sh test)
export LAKECTL_TEST_PYTHON
# Apache Flink, the windows' second oracle.
LAKECTL_FLINK_PYTHON=$(bash scripts/python-env.sh flink)
export LAKECTL_FLINK_PYTHON

started=$SECONDS
bash scripts/services.sh up --fresh
trap 'bash scripts/services.sh down' EXIT
# shellcheck source=/dev/null
source .lakectl/services.env
echo "[test] services ready in $((SECONDS - started)) s"

cargo test --workspace --locked --no-fail-fast
echo "[test] cargo tests passed in $((SECONDS - started)) s"
# The whole chain under faults (it restarts the stack's Postgres: after the cargo tests).
bash scripts/chaos.sh --minutes 2 --rounds 2 --kills-per-round 2 --report "$ROOT/.lakectl/chaos.json"
echo "[test] all tests passed in $((SECONDS - started)) s"
