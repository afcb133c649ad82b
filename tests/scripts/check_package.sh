#!/usr/bin/env bash
# The Debian package (cmake/package.cmake), end to end: cpack -G DEB into a temporary dir; what the
# .deb and the -dbgsym package hold; lintian with no E: line; then install, upgrade, remove and
# purge with dpkg in a throwaway root (--root), where the admin's edit of the conffile survives an
# upgrade that also changes it (--force-confold), remove keeps the conffile and purge deletes it.
# The root has no other package, so the dpkg steps use --force-depends (the Depends are checked
# here against the binary's shared libraries instead). Needs dpkg-dev, lintian and root (dpkg
# sets owners); exits 77 (skipped) without them or help2man (the man page).
# Usage: check_package.sh BUILD_DIR   (a RelWithDebInfo build; cpack first brings it up to date)
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/../.." && pwd)
for tool in cpack dpkg-deb dpkg-shlibdeps dpkg-parsechangelog lintian file readelf help2man; do
  command -v "$tool" >/dev/null || { echo "skipped: $tool not installed (dev.sh TEST_PKGS)"; exit 77; }
done
[ "$(id -u)" -eq 0 ] || { echo "skipped: dpkg --root needs root"; exit 77; }
tmp=$(mktemp -d /tmp/pacsnode-package-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
start=$SECONDS

# --- Build the packages, outside the build dir.
cpack -G DEB --config "$build/CPackConfig.cmake" -B "$tmp/out" >"$tmp/cpack.log" 2>&1 || { cat "$tmp/cpack.log"; fail "cpack"; }
version=$("$build/scp/pacsnode" --version | sed -n '1s/^pacsnode //p')
[ -n "$version" ] || fail "no version from $build/scp/pacsnode --version"
debs=("$tmp"/out/pacsnode_"$version"-*_amd64.deb)
[ ${#debs[@]} -eq 1 ] && [ -f "${debs[0]}" ] || fail "no single pacsnode_${version}-*_amd64.deb in: $(ls "$tmp/out")"
deb=${debs[0]}
pkgver=$(dpkg-deb -f "$deb" Version)
ddeb=$tmp/out/pacsnode-dbgsym_${pkgver}_amd64.ddeb
[ -f "$ddeb" ] || fail "no $(basename "$ddeb") (build type without debug info?)"
echo "$(basename "$deb"): $(stat -c %s "$deb") bytes; $(basename "$ddeb"): $(stat -c %s "$ddeb") bytes"

# --- Control fields: the project's version, the fields filled in, Depends from the libraries.
case $pkgver in "$version"-[0-9]*) ;; *) fail "package version $pkgver is not the project's $version-<revision>" ;; esac
for field in Package Version Architecture Maintainer Section Priority Description Depends Installed-Size; do
  [ -n "$(dpkg-deb -f "$deb" "$field")" ] || fail "control field $field empty"
done
depends=$(dpkg-deb -f "$deb" Depends)
for lib in libc6 libstdc++6 libdcmtk libgdcm libopencv-core libsqlite3 libsystemd0 libpq5; do
  echo "$depends" | grep -q "$lib" || fail "Depends lacks $lib: $depends"
done
# No maintainer scripts; the config is the one conffile.
ctrl=$(dpkg-deb --ctrl-tarfile "$deb" | tar -t | sed 's|^\./||' | grep -v '^$' | LC_ALL=C sort | tr '\n' ' ')
[ "$ctrl" = "conffiles control md5sums " ] || fail "control members: $ctrl"
[ "$(dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./conffiles)" = /etc/pacsnode/pacsnode.toml ] || fail "conffiles"

# --- Contents.
x=$tmp/x
dpkg-deb -x "$deb" "$x"
files=$(cd "$x" && find . -type f -o -type l | sed 's|^\./||' | LC_ALL=C sort | tr '\n' ' ')
want="etc/pacsnode/pacsnode.toml lib/systemd/system/pacsnode.service usr/bin/pacsnode usr/lib/pacsnode/modules/pacsnode-gdcm.so usr/share/doc/pacsnode/README.md usr/share/doc/pacsnode/changelog.Debian.gz usr/share/doc/pacsnode/copyright usr/share/man/man1/pacsnode.1.gz "
[ "$files" = "$want" ] || fail "files: $files, expected $want"
for elf in usr/bin/pacsnode usr/lib/pacsnode/modules/pacsnode-gdcm.so; do
  file -b "$x/$elf" | grep -q ', stripped' || fail "$elf not stripped: $(file -b "$x/$elf")"
done
"$x/usr/bin/pacsnode" --version | head -1 | grep -qx "pacsnode $version" || fail "packaged binary: $("$x/usr/bin/pacsnode" --version)"
cmp -s "$x/etc/pacsnode/pacsnode.toml" "$src/config/pacsnode.toml" || fail "conffile is not config/pacsnode.toml"
unit=$x/lib/systemd/system/pacsnode.service
grep -qx "ExecStart=/usr/bin/pacsnode run --config /etc/pacsnode/pacsnode.toml" "$unit" || fail "unit: $(grep ^Exec "$unit")"
grep -qx "ExecStartPre=/usr/bin/pacsnode check-config /etc/pacsnode/pacsnode.toml" "$unit" || fail "unit ExecStartPre"
if grep -n "@[A-Z_]*@" "$unit"; then fail "unit keeps a placeholder"; fi
# The changelog: gzip -9n of cmake/debian/changelog (no name, no time stamp), its first entry the
# package's version.
gzip -9n -c "$src/cmake/debian/changelog" | cmp -s - "$x/usr/share/doc/pacsnode/changelog.Debian.gz" ||
  fail "changelog.Debian.gz is not gzip -9n of cmake/debian/changelog"
logver=$(dpkg-parsechangelog -l "$src/cmake/debian/changelog" -S Version)
[ "$logver" = "$pkgver" ] || fail "cmake/debian/changelog's first entry is $logver, the package $pkgver: add an entry"
# The -dbgsym package: the binary's debug info under its build ID, md5sums relative.
build_id=$(readelf -n "$x/usr/bin/pacsnode" | sed -n 's/.*Build ID: //p')
[ -n "$build_id" ] || fail "binary has no build ID"
debug=usr/lib/debug/.build-id/${build_id:0:2}/${build_id:2}.debug
dbg_files=$(dpkg-deb -c "$ddeb")  # (not piped into grep -q: pipefail would see tar's SIGPIPE)
dbg_md5sums=$(dpkg-deb --ctrl-tarfile "$ddeb" | tar -xOf - ./md5sums)
echo "$dbg_files" | grep -q " \./$debug$" || fail "$(basename "$ddeb") lacks $debug"
echo "$dbg_md5sums" | grep -qx "[0-9a-f]*  $debug" || fail "dbgsym md5sums: $dbg_md5sums"
[ "$(dpkg-deb -f "$ddeb" Depends)" = "pacsnode (= $pkgver)" ] || fail "dbgsym Depends: $(dpkg-deb -f "$ddeb" Depends)"

# --- lintian: no error. Warnings and notes are printed (README lists the known ones).
rc=0
lintian --pedantic -I "$deb" "$ddeb" >"$tmp/lintian.log" 2>&1 || rc=$?  # 2: errors found, 1: lintian failed
grep -v '^running with root privileges' "$tmp/lintian.log" || true
[ "$rc" -ne 1 ] || fail "lintian did not run"
if [ "$rc" -ne 0 ] || grep -q '^E: ' "$tmp/lintian.log"; then fail "lintian errors"; fi
# Debian's hardening flags (CMakeLists.txt): fortified libc calls, full RELRO, stack protector.
# The GDCM module calls no libc function that _FORTIFY_SOURCE could check (built with the same flags):
# lintian's info tag hardening-no-fortify-functions cannot tell that from a build without them.
if grep 'hardening-no-' "$tmp/lintian.log" | grep -v 'hardening-no-fortify-functions \[usr/lib/pacsnode/modules/pacsnode-gdcm.so\]$'; then
  fail "built without Debian's hardening flags"
fi

# --- dpkg in a throwaway root: install, upgrade keeping the admin's edit, remove, purge.
root=$tmp/root
mkdir -p "$root"/var/lib/dpkg/{info,updates,triggers,alternatives} "$root/var/log"
touch "$root"/var/lib/dpkg/{status,available}
dpkg_root() { dpkg --root="$root" --log="$root/var/log/dpkg.log" --force-depends "$@" >>"$tmp/dpkg.log" 2>&1 ||
  { cat "$tmp/dpkg.log"; fail "dpkg $*"; }; }
status() { dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Status} ${Version}' "$1" 2>/dev/null || echo "unknown"; }
conf=$root/etc/pacsnode/pacsnode.toml

dpkg_root -i "$deb"
[ "$(status pacsnode)" = "install ok installed $pkgver" ] || fail "after install: $(status pacsnode)"
for f in usr/bin/pacsnode usr/lib/pacsnode/modules/pacsnode-gdcm.so lib/systemd/system/pacsnode.service etc/pacsnode/pacsnode.toml usr/share/doc/pacsnode/copyright; do
  [ -e "$root/$f" ] || fail "install: no $f"
done
[ ! -e "$root/etc/systemd/system/multi-user.target.wants/pacsnode.service" ] || fail "install enabled the unit"
"$root/usr/bin/pacsnode" check-config "$conf" >/dev/null 2>&1 || fail "installed config does not validate"
dpkg_root -i "$ddeb"
[ -f "$root/$debug" ] && [ -L "$root/usr/share/doc/pacsnode-dbgsym" ] || fail "dbgsym install"

# The admin edits the config; the next version changes it too. --force-confold keeps the admin's
# file and puts the package's beside it as .dpkg-dist.
echo "# admin: edited on this node" >>"$conf"
re=$tmp/repack
dpkg-deb -R "$deb" "$re"
newver=$version-$((${pkgver##*-} + 1))
sed -i "s/^Version: .*/Version: $newver/" "$re/DEBIAN/control"
echo "# upstream: changed in $newver" >>"$re/etc/pacsnode/pacsnode.toml"
(cd "$re" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort | xargs md5sum >DEBIAN/md5sums)
dpkg-deb --root-owner-group -Zgzip -b "$re" "$tmp/pacsnode_${newver}_amd64.deb" >/dev/null
dpkg_root -r pacsnode-dbgsym  # it depends on the exact version
dpkg_root --force-confold -i "$tmp/pacsnode_${newver}_amd64.deb"
[ "$(status pacsnode)" = "install ok installed $newver" ] || fail "after upgrade: $(status pacsnode)"
grep -qx "# admin: edited on this node" "$conf" || fail "upgrade lost the admin's edit"
! grep -q "# upstream: changed" "$conf" || fail "upgrade overwrote the conffile despite --force-confold"
grep -qx "# upstream: changed in $newver" "$conf.dpkg-dist" || fail "no $conf.dpkg-dist with the new version's config"

dpkg_root -r pacsnode
[ "$(status pacsnode)" = "deinstall ok config-files $newver" ] || fail "after remove: $(status pacsnode)"
[ ! -e "$root/usr/bin/pacsnode" ] && [ ! -e "$root/lib/systemd/system/pacsnode.service" ] || fail "remove left files"
grep -qx "# admin: edited on this node" "$conf" || fail "remove deleted the conffile"

dpkg_root -P pacsnode
[ "$(status pacsnode)" = "unknown" ] || fail "after purge: $(status pacsnode)"
[ ! -e "$conf" ] && [ ! -e "$conf.dpkg-dist" ] || fail "purge left $(ls "$root/etc/pacsnode")"
[ ! -e "$root/etc/pacsnode" ] || fail "purge left $root/etc/pacsnode"
left=$(cd "$root" && find . -mindepth 1 \( -path ./var -prune \) -o -print)
[ -z "$left" ] || fail "purge left: $left"

echo "package ok: $(basename "$deb"), lintian without errors, install/upgrade/remove/purge in a dpkg --root" \
  "($((SECONDS - start)) s)"
