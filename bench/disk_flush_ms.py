#!/usr/bin/python3
"""Median ms of one durable 530 KB file write on the disk holding DIR: write, fsync, rename,
directory fsync (40 samples), the floor under a C-STORE acknowledged only once durable.
Used by bench/ingest.sh and bench/cluster.sh. Usage: disk_flush_ms.py DIR"""
import os, statistics, sys, time

d = os.path.join(sys.argv[1], "flush")
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
print(f"{statistics.median(t) * 1000:.2f}")
