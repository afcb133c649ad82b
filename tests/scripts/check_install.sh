#!/usr/bin/env bash
# cmake --install into a temporary prefix: binary, example config and unit where they belong; the
# unit names the prefix's binary, passes systemd-analyze verify, and the example config validates;
# the installed binary finds its config and storage root, and check-config reads the installed unit.
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
# GDCM is a module the binary loads for JPEG 2000 only (dicom/gdcm_module.h): the installed binary
# finds it below the prefix and decodes; the same binary without it names what is missing.
src=$(cd "$(dirname "$0")/../.." && pwd)
j2k=$src/tests/data/pydicom/test_files/JPEG2000.dcm
modules=$(find "$prefix" -name pacsnode-gdcm.so)
[ "$(echo "$modules" | wc -w)" -eq 1 ] || { echo "pacsnode-gdcm.so installed as: '$modules'"; exit 1; }
if readelf -d "$prefix/bin/pacsnode" | grep -q "NEEDED.*gdcm"; then echo "the binary links GDCM at start"; exit 1; fi
"$prefix/bin/pacsnode" analyze -q --out "$prefix/j2k" "$j2k" || { echo "installed binary: JPEG 2000 not analysed"; exit 1; }
test -f "$prefix/j2k/features.csv"
mkdir -p "$prefix/alone/bin"
cp "$prefix/bin/pacsnode" "$prefix/alone/bin/"
rc=0
out=$("$prefix/alone/bin/pacsnode" analyze -q --out "$prefix/alone/j2k" "$j2k" 2>&1) || rc=$?
[ "$rc" -eq 1 ] || { echo "JPEG 2000 without the module: exit $rc, expected 1: $out"; exit 1; }
echo "$out" | grep -qF "JPEG 2000 needs GDCM's module: cannot load $prefix/alone/" ||
  { echo "missing module not reported: $out"; exit 1; }
if command -v systemd-analyze >/dev/null; then
  out=$(systemd-analyze verify "$unit" 2>&1 || true)
  [ -z "$out" ] || { echo "systemd-analyze verify: $out"; exit 1; }
  systemd-analyze security --offline=yes --threshold=30 "$unit" >/dev/null
fi
# The installed binary finds the config the unit names (<prefix>/etc/pacsnode/pacsnode.toml) and,
# like the daemon, a relative storage root in $STATE_DIRECTORY; it says which it used.
if [ ! -e /etc/pacsnode/pacsnode.toml ]; then
  cp "$prefix/etc/pacsnode/pacsnode.toml.example" "$prefix/etc/pacsnode/pacsnode.toml"
  rc=0
  out=$(cd / && STATE_DIRECTORY="$prefix/state" "$prefix/bin/pacsnode" outbox list 2>&1) || rc=$?
  [ "$rc" -eq 1 ] || { echo "outbox list without an index: exit $rc, expected 1: $out"; exit 1; }
  echo "$out" | grep -qF "pacsnode: config $prefix/etc/pacsnode/pacsnode.toml" || { echo "default config not used: $out"; exit 1; }
  echo "$out" | grep -qF "pacsnode: storage root $prefix/state/var/pacsnode (storage.root \"var/pacsnode\" in \$STATE_DIRECTORY" ||
    { echo "storage root not resolved as the daemon does: $out"; exit 1; }
  echo "$out" | grep -qF "no index at $prefix/state/var/pacsnode/index.sqlite" || { echo "no index not reported: $out"; exit 1; }
fi
# check-config reads the unit installed next to the binary: a port below 1024 needs
# CAP_NET_BIND_SERVICE, which the unit grants only once its two lines are uncommented.
if [ "$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start 2>/dev/null || echo 1024)" -gt 104 ] &&
   [ ! -e /etc/systemd/system/pacsnode.service ]; then
  low=$prefix/low.toml
  printf '[node]\nport = 104\n[storage]\nroot = "%s/state"\n' "$prefix" >"$low"
  out=$("$prefix/bin/pacsnode" check-config "$low" 2>&1)
  echo "$out" | grep -qF "warning: node.port 104 is below 1024" || { echo "no port warning: $out"; exit 1; }
  echo "$out" | grep -qF "which $unit does not grant" || { echo "check-config did not read $unit: $out"; exit 1; }
  sed -i -e 's/^#\(CapabilityBoundingSet=CAP_NET_BIND_SERVICE\)$/\1/' -e 's/^#\(AmbientCapabilities=CAP_NET_BIND_SERVICE\)$/\1/' "$unit"
  out=$("$prefix/bin/pacsnode" check-config "$low" 2>&1)
  if echo "$out" | grep -q "node.port"; then echo "port warning despite the capability: $out"; exit 1; fi
fi
echo "install layout and unit ok under $prefix"
