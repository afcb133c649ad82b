#!/usr/bin/env bash
# The two commands of README.md, for a fresh Debian 12 machine (as root, or with sudo):
#   ./dev.sh run    install what is missing, build, run the daemon on its embedded default config
#                   (127.0.0.1:11112, AE title PACSNODE, storage under ./var/pacsnode)
#   ./dev.sh test   install what is missing, build, run every test (CTest: unit and integration),
#                   then build-fuzz (clang, ASan+UBSan, libFuzzer): the unit tests once more under
#                   the sanitizers, every saved fuzz reproducer and each fuzz harness briefly
# Also: ./dev.sh build (install and build only); ./dev.sh sanitize (the build-fuzz part of `test`
# alone).
set -euo pipefail
cd "$(dirname "$0")"

BUILD_PKGS=(cmake g++ make pkg-config libdcmtk-dev dcmtk libgdcm-dev libgdcm-tools libopencv-dev
  libboost-dev libboost-test-dev zlib1g-dev libspdlog-dev libfmt-dev libtomlplusplus-dev libsqlite3-dev libpq-dev libsystemd-dev
  nlohmann-json3-dev libxxhash-dev libcli11-dev libssl-dev libqhull-dev libpng-dev)
# What the tests drive and check with: DCMTK's tools, a real Orthanc as the PACS, dciodvfy,
# pixelmed's validators, pydicom/NumPy/SciPy/scikit-image as independent readers; headless Chromium
# (Selenium) for the status page, prometheus_client's parser for /metrics; for the Debian package
# (test_package): dpkg-dev (dpkg-shlibdeps), lintian, file and binutils (CPack's -dbgsym split),
# help2man (its man page).
TEST_PKGS=(dcmtk orthanc dicom3tools pixelmed-apps python3-pydicom python3-numpy python3-scipy python3-skimage
  curl bc postgresql
  chromium chromium-driver python3-selenium python3-prometheus-client
  dpkg-dev lintian file binutils help2man)
# The sanitizer and fuzzing build of the test command (clang, its libFuzzer/ASan runtimes, llvm-symbolizer).
SANITIZE_PKGS=(clang-14 libclang-rt-14-dev llvm-14 time)

install_missing() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "dev.sh: installing ${missing[*]}" >&2
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

build() {
  cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build -j"$(nproc)"
}

# Unit tests and fuzz harnesses with AddressSanitizer + UndefinedBehaviorSanitizer (clang, libFuzzer
# coverage), in their own build dir; ctest -L unit runs the unit tests, -L fuzz the reproducers of
# fuzz/regressions/ and a brief run of each harness (PACSNODE_FUZZ_SECONDS each, default 30).
build_sanitized() {
  cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++-14 -DPACSNODE_FUZZ=ON \
    -DPACSNODE_FUZZ_SECONDS="${PACSNODE_FUZZ_SECONDS:-30}" >/dev/null
  cmake --build build-fuzz -j"$(nproc)" --target "$@"
}

case "${1:-}" in
  run)
    install_missing "${BUILD_PKGS[@]}"
    build
    shift
    exec build/scp/pacsnode run "$@"
    ;;
  test)
    install_missing "${BUILD_PKGS[@]}" "${TEST_PKGS[@]}" "${SANITIZE_PKGS[@]}"
    build
    status=0
    ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 1200 || status=1
    build_sanitized unit_tests fuzzers
    ctest --test-dir build-fuzz -L 'unit|fuzz' --output-on-failure -j"$(nproc)" --timeout 1800 || status=1
    exit $status
    ;;
  sanitize)
    install_missing "${BUILD_PKGS[@]}" "${TEST_PKGS[@]}" "${SANITIZE_PKGS[@]}"
    build_sanitized unit_tests fuzzers
    ctest --test-dir build-fuzz -L 'unit|fuzz' --output-on-failure -j"$(nproc)" --timeout 1800
    ;;
  build)
    install_missing "${BUILD_PKGS[@]}"
    build
    ;;
  *)
    sed -n '2,9p' "$0" >&2
    exit 2
    ;;
esac
