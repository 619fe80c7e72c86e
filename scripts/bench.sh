#!/usr/bin/env bash
# dcwatt's benchmark suite: the collector and agent side by side with their peers and the
# physical ceiling (docs/benchmarks.md). Installs the peers when missing (as the test
# scripts do), builds release binaries and writes the results table into
# docs/benchmarks.md. About 45 minutes on 2 cores.
#
#   scripts/bench.sh                 everything; results into docs/benchmarks.md
#   scripts/bench.sh --only latency  one measurement (repeatable); results printed only
#   scripts/bench.sh --smoke         seconds, debug binaries: checks the suite works (CI)
#   scripts/bench.sh --baseline REV  also builds commit REV (into target/bench-baseline) and
#                                    measures it beside this one where a measurement can
#                                    (api, ceiling): before/after in one run
#
# Other arguments go to scripts/bench.py (--json FILE, --keep).
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
only=0
baseline=
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) smoke=1; args+=("$1") ;;
        --only|--only=*) only=1; args+=("$1") ;;
        --baseline) baseline="$2"; shift ;;
        --baseline=*) baseline="${1#--baseline=}" ;;
        *) args+=("$1") ;;
    esac
    shift
done
set -- ${args[@]+"${args[@]}"}

# The baseline: that commit's sources, built with their own target dir.
if [ -n "$baseline" ]; then
    out=target/bench-baseline
    rm -rf "$out/src" && mkdir -p "$out/src"
    git archive "$baseline" | tar -x -C "$out/src"
    (cd "$out/src" && CARGO_TARGET_DIR="$PWD/../target" cargo build -q --release -p dcwatt-collector --bins)
    set -- "$@" --baseline-bin-dir "$out/target/release"
fi

scripts/install-test-deps.sh
# One MQTT connection per simulated agent (the connections run): 20,000 and more sockets
# in the load generator, the broker and the collector. Raised for this run only.
for n in 262144 65536 32768; do ulimit -n "$n" 2>/dev/null && break; done
if [ "$smoke" = 1 ]; then
    cargo build -q -p dcwatt-collector -p dcwatt-agent -p dcwatt-loadgen --bins
    exec python3 scripts/bench.py --bin-dir target/debug "$@"
fi
cargo build -q --release -p dcwatt-collector -p dcwatt-agent -p dcwatt-loadgen --bins
# The agent as it is meant to ship: the size-optimized `agent` profile (Cargo.toml).
cargo build -q --profile agent -p dcwatt-agent
set -- --bin-dir target/release --agent-bin target/agent/dcwatt-agent "$@"
if [ "$only" = 1 ]; then
    exec python3 scripts/bench.py "$@"
fi
exec python3 scripts/bench.py --write-doc docs/benchmarks.md "$@"
