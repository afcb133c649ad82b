#!/usr/bin/env bash
# cmake --install into a temporary prefix: binary, example config and unit where they belong; the
# unit names the prefix's binary, passes systemd-analyze verify, and the example config validates.
set -euo pipefail
build=$1
prefix=$(mktemp -d /tmp/pacsnode-install-XXXXXX)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
test -x "$prefix/bin/pacsnode"
test -f "$prefix/etc/pacsnode/pacsnode.toml.example"
unit=$prefix/lib/systemd/system/pacsnode.service
grep -q "^ExecStart=$prefix/bin/pacsnode run --config $prefix/etc/pacsnode/pacsnode.toml$" "$unit"
grep -q "^Type=notify$" "$unit"
grep -q "^WatchdogSec=" "$unit"
grep -q '^ExecReload=/bin/kill -HUP $MAINPID$' "$unit"
grep -q "^StateDirectory=pacsnode$" "$unit"
grep -q "^ProtectSystem=strict$" "$unit"
grep -q "^NoNewPrivileges=yes$" "$unit"
grep -q "^CapabilityBoundingSet=$" "$unit"
"$prefix/bin/pacsnode" check-config "$prefix/etc/pacsnode/pacsnode.toml.example"
"$prefix/bin/pacsnode" --version | grep -q "^pacsnode "
if command -v systemd-analyze >/dev/null; then
  out=$(systemd-analyze verify "$unit" 2>&1 || true)
  [ -z "$out" ] || { echo "systemd-analyze verify: $out"; exit 1; }
  systemd-analyze security --offline=yes --threshold=30 "$unit" >/dev/null
fi
echo "install layout and unit ok under $prefix"
