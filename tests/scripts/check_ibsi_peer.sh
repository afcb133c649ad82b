#!/bin/sh
# The Python IBSI peer (bench/ibsi_peer.py, the benchmark reference of issue #13) against the IBSI 1
# digital phantom's reference values: every tag of every family, all aggregations, discretisation
# none. Prints "<family>: passed/total" per family prefix; exits non-zero on any failure or
# missing tag. Needs Debian's python3-numpy, python3-scipy, python3-skimage.
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
exec /usr/bin/python3 "$here/bench/ibsi_peer.py" --check-phantom
