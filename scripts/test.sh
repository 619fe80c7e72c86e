#!/usr/bin/env bash
# Runs dcwatt's whole test suite: unit tests, then end-to-end tests with real agents, the
# embedded broker and Mosquitto. Installs Mosquitto first when it is missing (as root).
# Extra arguments go to the test runner (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
# The end-to-end tests run the real binaries: build them first.
cargo build --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    # Without nextest: end-to-end tests one at a time (they share two cores).
    cargo test --workspace --exclude dcwatt-e2e "$@"
    cargo test -p dcwatt-e2e "$@" -- --test-threads=1
fi
