#!/usr/bin/python3
"""Minimal DICOM Upper Layer client for tests: one association, C-STOREs whose data sets are
whatever bytes we are given (garbage, a real data set cut short, or files of raw data set bytes),
then release. storescu cannot do this: it re-encodes what it reads and refuses unreadable files.

Usage: raw_store.py HOST PORT CALLED_AE (--garbage N | --truncate FILE FRACTION | --datasets FILE...)
  --datasets: each FILE holds the bytes of one Secondary Capture data set in explicit VR little
              endian, sent as they are, one C-STORE each, all in the same association.
Prints "status 0xNNNN" (and " comment '...'" when the response has an Error Comment) for each
C-STORE response and exits 0, or exits 1 with the reason.
"""
import socket, struct, sys

IMPLICIT_LE, EXPLICIT_LE = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


def uid(u):
    b = u.encode()
    return b + (b"\0" if len(b) % 2 else b"")


def item(t, body):
    return struct.pack(">BBH", t, 0, len(body)) + body


def pdu(t, body):
    return struct.pack(">BBI", t, 0, len(body)) + body


def elem(group, el, value):  # implicit VR little endian
    return struct.pack("<HHI", group, el, len(value)) + value


def command(sop_class, sop_instance, message_id=1):
    body = (elem(0, 0x0002, uid(sop_class)) + elem(0, 0x0100, struct.pack("<H", 0x0001)) +
            elem(0, 0x0110, struct.pack("<H", message_id)) + elem(0, 0x0700, struct.pack("<H", 0)) +
            elem(0, 0x0800, struct.pack("<H", 0x0000)) + elem(0, 0x1000, uid(sop_instance)))
    return elem(0, 0x0000, struct.pack("<I", len(body))) + body


def recv_pdu(s):
    head = b""
    while len(head) < 6:
        chunk = s.recv(6 - len(head))
        if not chunk: raise EOFError("connection closed")
        head += chunk
    t, _, n = struct.unpack(">BBI", head)
    body = b""
    while len(body) < n:
        chunk = s.recv(n - len(body))
        if not chunk: raise EOFError("connection closed")
        body += chunk
    return t, body


def associate_rq(called, calling, contexts, max_pdu=16384):
    """A-ASSOCIATE-RQ PDU; contexts: (id, abstract syntax, transfer syntax) triples."""
    pcs = b"".join(item(0x20, bytes([pcid, 0, 0, 0]) + item(0x30, a.encode()) + item(0x40, ts.encode()))
                   for pcid, a, ts in contexts)
    user = item(0x50, item(0x51, struct.pack(">I", max_pdu)) + item(0x52, b"1.2.3.4.5.6"))
    return pdu(0x01, struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode() + b"\0" * 32 +
               item(0x10, b"1.2.840.10008.3.1.1.1") + pcs + user)


def response_elements(body):
    """{(group, element): value} of the DIMSE response command in a P-DATA-TF PDU body."""
    rsp = body[6:]
    out, pos = {}, 0
    while pos + 8 <= len(rsp):
        g, e, n = struct.unpack("<HHI", rsp[pos:pos + 8])
        out[(g, e)] = rsp[pos + 8:pos + 8 + n]
        pos += 8 + n
    return out


def response_status(body):
    """Status (0000,0900) of the DIMSE response command in a P-DATA-TF PDU body, or None."""
    v = response_elements(body).get((0, 0x0900))
    return struct.unpack("<H", v[:2])[0] if v and len(v) >= 2 else None


def dataset_bytes(args):
    if args[0] == "--garbage":
        n = int(args[1]) & ~1
        return bytes((i * 37 + 11) & 0xFF for i in range(n)), SC_STORAGE, "1.2.3.999.1"
    import pydicom
    path, fraction = args[1], float(args[2])
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = EXPLICIT_LE
    ds.is_little_endian, ds.is_implicit_VR = True, False
    fp = pydicom.filebase.DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(fp, ds)
    raw = fp.getvalue()
    cut = int(len(raw) * fraction) & ~1
    return raw[:cut], str(ds.SOPClassUID), str(ds.SOPInstanceUID)


def datasets_of(args):
    """(data, SOP class, SOP instance) for each C-STORE, and the transfer syntax to propose."""
    if args[0] == "--datasets":
        out = []
        for n, path in enumerate(args[1:]):
            with open(path, "rb") as f:
                out.append((f.read(), SC_STORAGE, f"1.2.826.0.1.3680043.10.543.99.{n + 1}"))
        return out, EXPLICIT_LE
    return [dataset_bytes(args)], EXPLICIT_LE if args[0] == "--truncate" else IMPLICIT_LE


def store(s, message_id, data, sop_class, sop_instance):
    """One C-STORE; returns the response's status and Error Comment (or None)."""
    cmd = command(sop_class, sop_instance, message_id)
    s.sendall(pdu(0x04, struct.pack(">IBB", len(cmd) + 2, 1, 0x03) + cmd))
    for i in range(0, len(data), 16000):
        chunk = data[i:i + 16000]
        last = 0x02 if i + 16000 >= len(data) else 0x00
        s.sendall(pdu(0x04, struct.pack(">IBB", len(chunk) + 2, 1, last) + chunk))
    t, body = recv_pdu(s)
    if t != 0x04:
        raise EOFError(f"no C-STORE response (PDU type {t:#x})")
    comment = response_elements(body).get((0, 0x0902))
    return response_status(body), comment.decode("latin-1").rstrip(" \0") if comment else None


def main():
    host, port, called = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    stores, ts = datasets_of(sys.argv[4:])
    sop_class = stores[0][1]
    s = socket.create_connection((host, port), timeout=30)
    s.sendall(associate_rq(called, "RAWSTORE", [(1, sop_class, ts)]))
    t, body = recv_pdu(s)
    if t != 0x02:
        print(f"association not accepted (PDU type {t:#x})"); return 1
    for n, (data, cls, inst) in enumerate(stores):
        try:
            status, comment = store(s, n + 1, data, cls, inst)
        except EOFError as e:
            print(e); return 1
        print(f"status {status:#06x}" + (f" comment '{comment}'" if comment else ""), flush=True)
    s.sendall(pdu(0x05, b"\0\0\0\0"))
    try:
        recv_pdu(s)
    except EOFError:
        pass
    s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
