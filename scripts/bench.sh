#!/usr/bin/env bash
# dcwatt's benchmark suite: the collector and agent side by side with their peers and the
# physical ceiling (docs/benchmarks.md). Installs the peers when missing (as the test
# scripts do), builds release binaries and writes the results table into
# docs/benchmarks.md. About 25 minutes on 2 cores.
#
#   scripts/bench.sh                 everything; results into docs/benchmarks.md
#   scripts/bench.sh --only latency  one measurement (repeatable); results printed only
#   scripts/bench.sh --smoke         seconds, debug binaries: checks the suite works (CI)
#
# Other arguments go to scripts/bench.py (--json FILE, --keep).
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
only=0
for a in "$@"; do
    case "$a" in
        --smoke) smoke=1 ;;
        --only|--only=*) only=1 ;;
    esac
done

scripts/install-test-deps.sh
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
