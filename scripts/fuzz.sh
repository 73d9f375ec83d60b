#!/usr/bin/env bash
# Fuzzes what lakectl parses from untrusted bytes (fuzz/fuzz_targets): silver's JSON record
# typer, the Avro decoding path, the schema type parser, the pipeline file loader and the
# read-only SQL guard, each with libFuzzer through cargo fuzz (nightly), and writes a report.
#
#   bash scripts/fuzz.sh [--seconds N] [--parallel J] [--report PATH] [TARGET…]
#       N: per target (default 600); J targets at once (default 1, each takes a core);
#       PATH default bench/results/fuzz-<date>.md
#
# A finding is a crash input in fuzz/artifacts/<target>/: reproduce it with
# `cargo +nightly fuzz run --dev -s none <target> <file>` (in fuzz/), turn it into a unit test, fix it. The corpora
# (fuzz/corpus/<target>/) stay between runs, outside git.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
seconds=600
parallel=1
report="$ROOT/bench/results/fuzz-$(date -u +%Y-%m-%d).md"
targets=()
while (($#)); do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --report) report=$2; shift 2 ;;
    --parallel) parallel=$2; shift 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
((${#targets[@]})) || targets=(json_record avro_record schema_type pipeline_file read_only_sql)

CACHE=${LAKECTL_CACHE:-$HOME/.cache/lakectl}
export CARGO_TARGET_DIR=${LAKECTL_FUZZ_TARGET_DIR:-$CACHE/fuzz-target}
# Debug builds (`--dev`): a release build of the whole tree (DataFusion, delta-rs) takes most
# of an hour on two cores, and the parsers run fast enough unoptimised. No AddressSanitizer
# (`--sanitizer none`): under -Zsanitizer=address every command in librdkafka's configure
# (rdkafka-sys builds it from source) fails with "Argument list too long", and what is fuzzed
# is safe Rust: the findings are panics, which libFuzzer catches without it.
FUZZ_FLAGS=(--dev --sanitizer none)
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal >&2
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "[fuzz] installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked >&2
fi

{
  echo "# Fuzzing, $(date -u +%Y-%m-%d)"
  echo
  echo "\`bash scripts/fuzz.sh --seconds $seconds\` at $(git rev-parse --short HEAD): libFuzzer through cargo fuzz"
  echo "(nightly, a debug build, no sanitizer), $seconds s per target on this machine's 2 cores, $parallel at a time."
  echo
  echo "| target | what it feeds | runs | runs/s | corpus | findings |"
  echo "|---|---|---:|---:|---:|---:|"
} >"$report.tmp"

declare -A what=(
  [json_record]="any bytes as a record of a schema with every column type, nested"
  [avro_record]="any bytes as Confluent-framed Avro records (3 writer ids, one unknown)"
  [schema_type]="any text as a schema type name; printed types parse back equal"
  [pipeline_file]="any text as a pipeline file, through every check"
  [read_only_sql]="any text as SQL; no plan that writes gets through the guard"
)
cd fuzz
# Every target built first, so the runs side by side do not build at once.
cargo +nightly fuzz build "${FUZZ_FLAGS[@]}" >&2

# One target: runs it, prints its report row.
fuzz_one() {
  local target=$1 log="$CARGO_TARGET_DIR/$1.log" status=0
  mkdir -p "corpus/$target" "artifacts/$target"
  cargo +nightly fuzz run "${FUZZ_FLAGS[@]}" "$target" "corpus/$target" -- -max_total_time="$seconds" \
    -print_final_stats=1 >"$log" 2>&1 || status=$?
  local runs rate corpus findings
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  corpus=$(find "corpus/$target" -type f | wc -l)
  findings=$(find "artifacts/$target" -type f | wc -l)
  echo "| \`$target\` | ${what[$target]} | ${runs:-?} | ${rate:-?} | $corpus | $findings |" >"$CARGO_TARGET_DIR/$target.row"
  if ((status != 0)); then
    echo "[fuzz] $target stopped with status $status: see $log" >&2
    tail -40 "$log" >&2
  fi
}

for target in "${targets[@]}"; do
  while (($(jobs -rp | wc -l) >= parallel)); do wait -n || true; done
  echo "[fuzz] $target for $seconds s" >&2
  fuzz_one "$target" &
done
wait
for target in "${targets[@]}"; do cat "$CARGO_TARGET_DIR/$target.row" >>"$report.tmp"; done
mv "$report.tmp" "$report"
echo "[fuzz] report: $report" >&2
cat "$report"
