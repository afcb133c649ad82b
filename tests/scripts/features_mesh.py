#!/usr/bin/python3
"""Independent reference for analysis::kernels::mesh_measures (scikit-image marching cubes), used by
tests/unit/test_kernels_mesh.cpp.

Usage: features_mesh.py mask1.nii [mask2.nii ...]
For each uncompressed NIfTI-1 mask: pad with one background voxel, marching cubes at level 0.5 with
the voxel spacing (as IBSI 1 prescribes), and print "area_mm2 volume_mm3" (volume by the divergence
theorem over the triangles). scikit-image's default (Lewiner) method.
"""
import struct
import sys

import numpy as np
from skimage import measure


def read_nifti(path):
    with open(path, "rb") as f:
        b = f.read()
    e = "<" if struct.unpack("<i", b[0:4])[0] == 348 else ">"
    dim = struct.unpack(e + "8h", b[40:56])
    datatype = struct.unpack(e + "h", b[70:72])[0]
    pixdim = struct.unpack(e + "8f", b[76:108])
    offset = int(struct.unpack(e + "f", b[108:112])[0])
    dtype = np.dtype({2: np.uint8, 4: np.int16, 16: np.float32}[datatype]).newbyteorder(e)
    nx, ny, nz = dim[1], dim[2], dim[3]
    data = np.frombuffer(b[offset:offset + nx * ny * nz * dtype.itemsize], dtype=dtype)
    return data.reshape(nz, ny, nx) != 0, (abs(pixdim[3]), abs(pixdim[2]), abs(pixdim[1]))


for path in sys.argv[1:]:
    mask, spacing = read_nifti(path)
    verts, faces, _, _ = measure.marching_cubes(np.pad(mask, 1).astype(np.float64), 0.5, spacing=spacing)
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    volume = abs(np.einsum("ij,ij->i", a, np.cross(b, c)).sum()) / 6.0
    print(f"{measure.mesh_surface_area(verts, faces):.10g} {volume:.10g}")
