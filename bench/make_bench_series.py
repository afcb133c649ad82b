#!/usr/bin/python3
"""Series for bench/pipeline.sh besides make_ct_phantom.py's phantom (uncompressed output; the
script re-encodes them losslessly with dcmcjpls / gdcmconv --j2k).

  make_bench_series.py replicate SRC_DIR OUT_DIR [--slices 300]
      A real CT series (e.g. ../shared/data/mirp/ct_images_seg/CRLM-CT-1004/image, 41 slices)
      stretched to --slices slices: the source slices in position order, then back and forth
      (0..n-1, n-2..1, 0..) so that neighbouring slices stay neighbours of the source; pixels and
      headers as in the source, except new Series, SOP Instance and Frame of Reference UIDs,
      consecutive Image Position (Patient) one source spacing apart along the slice normal
      (head to feet as the source), Instance Number and Slice Location. Explicit VR Little Endian.

  make_bench_series.py blobs OUT_DIR [--slices 300] [--size 512] [--seed 1]
      Many components: a soft-tissue ellipse (40 HU, noise sd 20 HU) in air (-1000 HU) holding
      tens of thousands of small separate air bubbles (-800 HU, ellipsoids of 1.6..3.2 voxel
      in-plane and 1..2.4 slice radii, one per cell of a jittered 9 x 9 x 7 voxel grid), i.e. a
      threshold < -400 HU gives one large border-touching component (the outside air) and one
      component per bubble. CT Image Storage, 1 mm slices, 500 mm field of view.

Prints the number of files written.
"""
import argparse, glob, os, numpy as np, pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid, CTImageStorage


def replicate(src, out, slices):
    dss = [pydicom.dcmread(f) for f in sorted(glob.glob(os.path.join(src, "*")))
           if os.path.isfile(f)]
    dss = [d for d in dss if "ImagePositionPatient" in d]
    iop = np.array([float(x) for x in dss[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    dss.sort(key=lambda d: float(np.dot(normal, [float(x) for x in d.ImagePositionPatient])))
    n = len(dss)
    pos = np.array([[float(x) for x in d.ImagePositionPatient] for d in dss])
    step = (pos[-1] - pos[0]) / (n - 1)  # one source spacing along the normal
    cycle = list(range(n)) + list(range(n - 2, 0, -1))  # back and forth
    series_uid, for_uid = generate_uid(), generate_uid()
    os.makedirs(out, exist_ok=True)
    for k in range(slices):
        d = dss[cycle[k % len(cycle)]]
        d = pydicom.dcmread(d.filename)  # a fresh copy per output file
        d.SeriesInstanceUID = series_uid
        d.FrameOfReferenceUID = for_uid
        d.SOPInstanceUID = generate_uid()
        d.file_meta.MediaStorageSOPInstanceUID = d.SOPInstanceUID
        d.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        # head to feet as the source: the last source slice's end is where slice 0 starts
        p = pos[-1] - k * step
        d.ImagePositionPatient = [f"{x:.6f}" for x in p]
        d.SliceLocation = f"{float(np.dot(normal, p)):.6f}"
        d.InstanceNumber = k + 1
        d.SeriesDescription = (str(d.get("SeriesDescription", "")) + " x" + str(slices))[:64]
        d.save_as(os.path.join(out, f"ct_{k:04d}.dcm"), write_like_original=False)
    return slices


def blobs(out, slices, size, seed):
    rng = np.random.default_rng(seed)
    pitch, pz = 9, 7
    ny, nz = size // pitch + 1, slices // pz + 1
    jitter = rng.integers(-1, 2, size=(nz, ny, ny, 3))          # per cell: dz, dy, dx
    rxy = rng.uniform(1.6, 3.2, size=(nz, ny, ny))
    rz = rng.uniform(1.0, 2.4, size=(nz, ny, ny))
    yy, xx = np.mgrid[0:size, 0:size]
    c = (size - 1) / 2
    body = ((yy - c) / (0.42 * size)) ** 2 + ((xx - c) / (0.47 * size)) ** 2 <= 1
    cy, cx = yy // pitch, xx // pitch                              # in-plane cell of each pixel
    pixel = 500.0 / size
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    os.makedirs(out, exist_ok=True)
    for z in range(slices):
        img = np.where(body, 40.0, -1000.0) + rng.normal(0, 20, (size, size))
        inside = np.zeros((size, size), bool)
        for cz in {max(z // pz - 1, 0), z // pz, min(z // pz + 1, nz - 1)}:
            j = jitter[cz, cy, cx]
            dz = (z - (cz * pz + pz // 2 + j[..., 0])) / rz[cz, cy, cx]
            dy = (yy - (cy * pitch + pitch // 2 + j[..., 1])) / rxy[cz, cy, cx]
            dx = (xx - (cx * pitch + pitch // 2 + j[..., 2])) / rxy[cz, cy, cx]
            inside |= dz * dz + dy * dy + dx * dx <= 1
        # bubbles well inside the body only (5 voxels of tissue to the outside air)
        inside &= body_eroded(body, 5)
        img[inside] = -800 + rng.normal(0, 20, int(inside.sum()))
        write_ct(out, z, np.clip(np.rint(img), -1024, 3071).astype(np.int16), pixel, study, series, frame)
    return slices


_eroded = {}


def body_eroded(body, r):
    key = (body.shape, r)
    if key not in _eroded:
        m = body.copy()
        for _ in range(r):
            m = m & np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1)
        _eroded[key] = m
    return _eroded[key]


def write_ct(out, k, pixels, pixel_mm, study, series, frame):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = os.path.join(out, f"ct_{k:04d}.dcm")
    d = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
    d.SOPClassUID, d.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    d.StudyInstanceUID, d.SeriesInstanceUID, d.FrameOfReferenceUID = study, series, frame
    d.Modality, d.PatientName, d.PatientID = "CT", "BENCH^BLOBS", "BENCH-BLOBS"
    d.BodyPartExamined, d.SeriesDescription = "CHEST", "bench: many small air bubbles"
    d.StudyDate, d.StudyTime, d.SeriesNumber, d.InstanceNumber = "20240101", "120000", 1, k + 1
    d.ImagePositionPatient = [-250.0, -250.0, -float(k)]
    d.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    d.PixelSpacing = [pixel_mm, pixel_mm]
    d.SliceThickness = 1.0
    d.SliceLocation = -float(k)
    d.Rows, d.Columns = pixels.shape
    d.SamplesPerPixel, d.PhotometricInterpretation = 1, "MONOCHROME2"
    d.BitsAllocated, d.BitsStored, d.HighBit, d.PixelRepresentation = 16, 16, 15, 1
    d.RescaleIntercept, d.RescaleSlope, d.RescaleType = 0, 1, "HU"
    d.PixelData = pixels.tobytes()
    d.save_as(path, write_like_original=False)


ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
sub = ap.add_subparsers(dest="cmd", required=True)
r = sub.add_parser("replicate")
r.add_argument("src")
r.add_argument("out")
r.add_argument("--slices", type=int, default=300)
b = sub.add_parser("blobs")
b.add_argument("out")
b.add_argument("--slices", type=int, default=300)
b.add_argument("--size", type=int, default=512)
b.add_argument("--seed", type=int, default=1)
a = ap.parse_args()
print(replicate(a.src, a.out, a.slices) if a.cmd == "replicate" else blobs(a.out, a.slices, a.size, a.seed))
