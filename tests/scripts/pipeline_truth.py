#!/usr/bin/python3
"""Convert the truth labels of make_ct_phantom.py (--truth X.npz) to a file C++ reads without numpy:
one ASCII line "depth rows cols" then depth*rows*cols uint8 labels, z in file order (ct_0000.dcm first).

Usage: pipeline_truth.py TRUTH.npz OUT.raw
"""
import sys
import numpy as np

labels = np.load(sys.argv[1])["labels"].astype(np.uint8)
with open(sys.argv[2], "wb") as f:
    f.write(("%d %d %d\n" % labels.shape).encode())
    f.write(np.ascontiguousarray(labels).tobytes())
