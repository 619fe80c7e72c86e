#!/usr/bin/env bash
# Builds the Debian packages dcwatt-collector and dcwatt-agent into target/debian/ with
# cargo-deb (installed into ~/.cargo/bin when missing). The packaged configurations are the
# commented defaults with state_dir set to the unit's StateDirectory=.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo deb --version >/dev/null 2>&1; then
    echo "package: installing cargo-deb" >&2
    cargo install --locked --quiet cargo-deb
fi
out=target/dcwatt-package
mkdir -p "$out"
for part in collector agent; do
    sed -e "s|^# state_dir = \"/var/lib/dcwatt-$part\"|state_dir = \"/var/lib/dcwatt-$part\"|" \
        "configs/$part.toml" >"$out/$part.toml"
    grep -q "^state_dir = \"/var/lib/dcwatt-$part\"" "$out/$part.toml" \
        || { echo "package: configs/$part.toml has no state_dir line to set" >&2; exit 1; }
done
cargo deb -p dcwatt-collector --quiet
cargo deb -p dcwatt-agent --profile agent --quiet
ls -l target/debian/*.deb
