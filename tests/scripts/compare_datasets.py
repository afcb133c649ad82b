#!/usr/bin/python3
"""Checks that instances were stored unchanged, with pydicom as an independent reader.

Usage: compare_datasets.py STORED_DIR SENT_FILE_OR_DIR...
Every sent instance must be found under STORED_DIR (by SOP Instance UID) with the same data set
(every element outside the file meta group, pixel data included) and must read to the end.
Prints "compared N missing M different D unreadable U" and exits 0 only if all match.
"""
import os, sys
import pydicom


def files(paths):
    for p in paths:
        if os.path.isdir(p):
            for root, _, names in os.walk(p):
                for n in sorted(names):
                    yield os.path.join(root, n)
        else:
            yield p


def main():
    stored_dir, sent = sys.argv[1], sys.argv[2:]
    stored, unreadable = {}, 0
    for f in files([stored_dir]):
        if "/.tmp/" in f or not f.endswith(".dcm"):
            continue
        try:
            ds = pydicom.dcmread(f)
            _ = ds.PixelData if "PixelData" in ds else None  # reads to the end
            stored[str(ds.SOPInstanceUID)] = ds
        except Exception as e:  # a partial file would land here
            print(f"unreadable stored file {f}: {e}")
            unreadable += 1
    compared = missing = different = 0
    for f in files(sent):
        ref = pydicom.dcmread(f)
        got = stored.get(str(ref.SOPInstanceUID))
        compared += 1
        if got is None:
            missing += 1
            print(f"missing: {f}")
            continue
        for elem in ref:
            # File meta belongs to the file, not the data set; Data Set Trailing Padding carries no
            # data and senders drop it (storescu does).
            if elem.tag.group == 0x0002 or elem.tag == 0xFFFCFFFC:
                continue
            if elem.tag not in got or got[elem.tag].value != elem.value:
                different += 1
                print(f"different: {f} {elem.tag}")
                break
    print(f"compared {compared} missing {missing} different {different} unreadable {unreadable}")
    return 0 if missing == different == unreadable == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
