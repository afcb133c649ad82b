#!/usr/bin/python3
"""Independent reference for analysis::kernels::overlap_metrics (SciPy), used by
tests/unit/test_evaluate_overlap.cpp.

Usage: evaluate_overlap.py reference.nii test.nii
Reads two uncompressed NIfTI-1 masks (minimal header parsing with NumPy, no nibabel) and prints
"name value" lines.

Surface definition (same as the C++): foreground voxels with at least one 6-neighbour in the
background, voxels outside the volume counting as background, i.e.
mask & ~binary_erosion(mask, 6-connected structure, border_value=0).
Distances: scipy.ndimage.distance_transform_edt(~surface, sampling=spacing) evaluated on the other
mask's surface voxels; HD = max, HD95 = 95th percentile (NumPy linear), MSD = mean, over the
pooled distances of both directions.
"""
import struct
import sys

import numpy as np
from scipy import ndimage


def read_nifti(path):
    with open(path, "rb") as f:
        b = f.read()
    endian = "<" if struct.unpack("<i", b[0:4])[0] == 348 else ">"
    dim = struct.unpack(endian + "8h", b[40:56])
    datatype = struct.unpack(endian + "h", b[70:72])[0]
    pixdim = struct.unpack(endian + "8f", b[76:108])
    offset = int(struct.unpack(endian + "f", b[108:112])[0])
    dtype = {2: np.uint8, 4: np.int16, 16: np.float32, 512: np.uint16, 8: np.int32}[datatype]
    nx, ny, nz = dim[1], dim[2], dim[3]
    data = np.frombuffer(b[offset:offset + nx * ny * nz * np.dtype(dtype).itemsize],
                         dtype=np.dtype(dtype).newbyteorder(endian))
    # NIfTI i is fastest: array index [k, j, i] = [slice, row, column]
    return data.reshape(nz, ny, nx) != 0, (abs(pixdim[3]), abs(pixdim[2]), abs(pixdim[1]))


def surface(mask):
    structure = ndimage.generate_binary_structure(3, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def main():
    ref, spacing = read_nifti(sys.argv[1])
    test, spacing_t = read_nifti(sys.argv[2])
    assert ref.shape == test.shape and np.allclose(spacing, spacing_t)
    vv = spacing[0] * spacing[1] * spacing[2]
    inter = np.logical_and(ref, test).sum()
    union = np.logical_or(ref, test).sum()
    out = {
        "reference_voxels": ref.sum(),
        "test_voxels": test.sum(),
        "dice": 2.0 * inter / (ref.sum() + test.sum()),
        "jaccard": inter / union,
        "volume_difference_mm3": (test.sum() - ref.sum()) * vv,
    }
    sr, st = surface(ref), surface(test)
    d_to_test = ndimage.distance_transform_edt(~st, sampling=spacing)
    d_to_ref = ndimage.distance_transform_edt(~sr, sampling=spacing)
    pooled = np.concatenate([d_to_test[sr], d_to_ref[st]])
    out["reference_surface_voxels"] = sr.sum()
    out["test_surface_voxels"] = st.sum()
    out["hausdorff_mm"] = pooled.max()
    out["hausdorff95_mm"] = np.percentile(pooled, 95)
    out["mean_surface_distance_mm"] = pooled.mean()
    for k, v in out.items():
        print(f"{k} {float(v):.17g}")


if __name__ == "__main__":
    main()
