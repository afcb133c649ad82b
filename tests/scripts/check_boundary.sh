#!/bin/sh
# The trust boundary in the build: the daemon's own code (libpacsnode_scp.a) and the codec-free
# DICOM core (libpacsnode_dicom_core.a) must not call pixel decoding, codecs or the analysis
# pipeline; those run only in `pacsnode worker`. Fails, listing the symbols, if they do.
# Usage: check_boundary.sh LIBPACSNODE_SCP.a LIBPACSNODE_DICOM_CORE.a
set -eu
status=0
# Entry points of decoding and analysis (C++ names, demangled) and of the codec libraries.
deny='dicom::load_files|dicom::load_folder|dicom::decode_|dicom::read_image_header|dicom::read_seg|dicom::write_seg|dicom::write_sr|dicom::write_key_images|analysis::decode_|analysis::Pipeline::run|analysis::stages::|gdcm::|DJDecoderRegistration|DJLSDecoderRegistration|DcmRLEDecoderRegistration|DJ2KDecoder|DicomImage|opj_|jpeg_'
for lib in "$@"; do
  [ -f "$lib" ] || { echo "missing $lib"; exit 2; }
  found=$(nm -C --undefined-only "$lib" 2>/dev/null | grep -E "$deny" | sort -u || true)
  if [ -n "$found" ]; then
    echo "$(basename "$lib") references decoding/analysis code it must leave to the worker:"
    echo "$found" | sed 's/^/  /'
    status=1
  else
    echo "$(basename "$lib"): no decoding or analysis symbols ($(nm -C --undefined-only "$lib" | wc -l) undefined symbols checked)"
  fi
done
exit $status
