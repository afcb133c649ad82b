#!/usr/bin/python3
"""What durability costs on the disk holding DIR. Used by bench/ingest.sh and bench/cluster.sh.

disk_flush_ms.py DIR
    median ms of one durable 530 KB file write: write, fsync, rename, directory fsync (40
    samples): the floor under a C-STORE acknowledged only once durable, without a journal.
disk_flush_ms.py --journal DIR
    median ms of one 530 KB record written over a zero-filled, already allocated file at the next
    4096-byte boundary, then fdatasync (100 samples): what pacsnode's journal append costs.
disk_flush_ms.py --bandwidth DIR FILE...
    MB/s at which the disk makes the bytes of FILE... durable: all written into one new file,
    then one fdatasync (best of 3). An acknowledged instance must reach the disk, so the bytes
    of a study over this rate is a floor under the time to take it durably, however it is done.
"""
import os, statistics, sys, time


def file_and_directory(d):
    os.makedirs(d)
    data = os.urandom(530000)
    t = []
    for i in range(40):
        s = time.perf_counter()
        p = os.path.join(d, f"{i}.part")
        with open(p, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(p, p[:-5])
        fd = os.open(d, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        t.append(time.perf_counter() - s)
    return statistics.median(t) * 1000


def journal_record(d):
    os.makedirs(d)
    size = 64 << 20
    data = os.urandom(530000)
    step = (len(data) + 4095) // 4096 * 4096
    fd = os.open(os.path.join(d, "segment"), os.O_RDWR | os.O_CREAT, 0o600)
    zeros = bytes(1 << 20)
    for off in range(0, size, len(zeros)):
        os.pwrite(fd, zeros, off)
    os.fsync(fd)
    t, off = [], 4096
    for _ in range(100):
        s = time.perf_counter()
        os.pwrite(fd, data, off)
        os.fdatasync(fd)
        t.append(time.perf_counter() - s)
        off = off + step if off + 2 * step < size else 4096
    os.close(fd)
    return statistics.median(t) * 1000


def bandwidth(d, files):
    os.makedirs(d)
    blobs = [open(f, "rb").read() for f in files]
    total = sum(len(b) for b in blobs)
    best = None
    for i in range(3):
        p = os.path.join(d, f"all{i}")
        s = time.perf_counter()
        fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o600)
        for b in blobs:
            os.write(fd, b)
        os.fdatasync(fd)
        os.close(fd)
        e = time.perf_counter() - s
        best = e if best is None else min(best, e)
        os.remove(p)
    return total / best / 1e6


if __name__ == "__main__":
    if sys.argv[1] == "--journal":
        print(f"{journal_record(os.path.join(sys.argv[2], 'journal-flush')):.2f}")
    elif sys.argv[1] == "--bandwidth":
        print(f"{bandwidth(os.path.join(sys.argv[2], 'bandwidth'), sys.argv[3:]):.0f}")
    else:
        print(f"{file_and_directory(os.path.join(sys.argv[1], 'flush')):.2f}")
