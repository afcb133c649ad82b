#!/usr/bin/python3
"""Holds one DICOM association open across an event: associates for Verification, prints
"associated", waits until the file GO exists, then sends a C-ECHO on the same association,
releases, and prints "echo status 0xNNNN". Exits 1 with the reason when any step fails.

Lets a test show that an association in flight carries on while something else happens in the
node (an analysis worker crashing, a reload).

Usage: hold_echo.py HOST PORT CALLED_AE GO_FILE [TIMEOUT_SECONDS]
"""
import os, socket, struct, sys, time

VERIFICATION, IMPLICIT_LE = "1.2.840.10008.1.1", "1.2.840.10008.1.2"


def item(t, body):
    return struct.pack(">BBH", t, 0, len(body)) + body


def pdu(t, body):
    return struct.pack(">BBI", t, 0, len(body)) + body


def elem(group, el, value):  # implicit VR little endian
    return struct.pack("<HHI", group, el, len(value)) + value


def uid(u):
    b = u.encode()
    return b + (b"\0" if len(b) % 2 else b"")


def recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data


def recv_pdu(s):
    t, _, n = struct.unpack(">BBI", recv_exact(s, 6))
    return t, recv_exact(s, n)


def main():
    host, port, called, go = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 120
    s = socket.create_connection((host, port), timeout=timeout)
    pc = item(0x20, bytes([1, 0, 0, 0]) + item(0x30, VERIFICATION.encode()) + item(0x40, IMPLICIT_LE.encode()))
    user = item(0x50, item(0x51, struct.pack(">I", 16384)) + item(0x52, b"1.2.3.4.5.6"))
    rq = (struct.pack(">HH", 1, 0) + called.ljust(16).encode() + b"HOLDECHO".ljust(16) + b"\0" * 32 +
          item(0x10, b"1.2.840.10008.3.1.1.1") + pc + user)
    s.sendall(pdu(0x01, rq))
    t, _ = recv_pdu(s)
    if t != 0x02:
        print(f"association not accepted (PDU type {t:#x})", flush=True)
        return 1
    print("associated", flush=True)
    deadline = time.monotonic() + timeout
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            print("timed out waiting for", go, flush=True)
            return 1
        time.sleep(0.05)
    body = (elem(0, 0x0002, uid(VERIFICATION)) + elem(0, 0x0100, struct.pack("<H", 0x0030)) +
            elem(0, 0x0110, struct.pack("<H", 7)) + elem(0, 0x0800, struct.pack("<H", 0x0101)))
    cmd = elem(0, 0x0000, struct.pack("<I", len(body))) + body
    s.sendall(pdu(0x04, struct.pack(">IBB", len(cmd) + 2, 1, 0x03) + cmd))
    t, rsp = recv_pdu(s)
    if t != 0x04:
        print(f"no C-ECHO response (PDU type {t:#x})", flush=True)
        return 1
    rsp, status, pos = rsp[6:], None, 0
    while pos + 8 <= len(rsp):
        g, e, n = struct.unpack("<HHI", rsp[pos:pos + 8])
        if (g, e) == (0, 0x0900):
            status = struct.unpack("<H", rsp[pos + 8:pos + 10])[0]
        pos += 8 + n
    s.sendall(pdu(0x05, b"\0\0\0\0"))
    t, _ = recv_pdu(s)
    s.close()
    print(f"echo status {status:#06x}" if status is not None else "echo status missing", flush=True)
    return 0 if status == 0 and t == 0x06 else 1


if __name__ == "__main__":
    sys.exit(main())
