#!/usr/bin/python3
"""A DICOM Upper Layer peer that misbehaves on purpose, for the hostile-peer integration tests
(tests/integration/test_scp_hostile.cpp). storescu and pydicom refuse to send what they cannot
parse, so this writes the PDUs itself (helpers from raw_store.py).

Usage: raw_pdu.py HOST PORT SCENARIO [options]; raw_pdu.py --help lists the scenarios.
Every scenario prints its observations as one JSON object on the last line of stdout. Scenarios
that hold connections print "ready" once they are all open, so that the test can act meanwhile.
"""
import argparse, json, selectors, socket, struct, sys, time

from raw_store import IMPLICIT_LE, SC_STORAGE, associate_rq, command, elem, item, pdu, recv_pdu, response_status, uid

VERIFICATION = "1.2.840.10008.1.1"
CONTEXTS = [(1, SC_STORAGE, IMPLICIT_LE), (3, VERIFICATION, IMPLICIT_LE)]
PDU_NAMES = {1: "associate-rq", 2: "associate-ac", 3: "associate-rj", 4: "p-data", 5: "release-rq", 6: "release-rp",
             7: "abort"}


def connect(host, port, source=None, timeout=10):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms stall per request/response
    if source: s.bind((source, 0))
    s.settimeout(timeout)
    s.connect((host, port))
    return s


def sources(arg):
    return arg.split(",") if arg else [None]


def text(value):
    b = value.encode()
    return b + (b" " if len(b) % 2 else b"")


def us(v):
    return struct.pack("<H", v)


def one_pixel_image(study, series, sop):
    """A 1x1 8-bit Secondary Capture data set, implicit VR little endian, elements in tag order."""
    elements = [(0x0008, 0x0016, uid(SC_STORAGE)), (0x0008, 0x0018, uid(sop)), (0x0008, 0x0060, text("OT")),
                (0x0010, 0x0020, text("RAWPDU")), (0x0020, 0x000D, uid(study)), (0x0020, 0x000E, uid(series)),
                (0x0020, 0x0013, text("1")), (0x0028, 0x0002, us(1)), (0x0028, 0x0004, text("MONOCHROME2")),
                (0x0028, 0x0010, us(1)), (0x0028, 0x0011, us(1)), (0x0028, 0x0100, us(8)), (0x0028, 0x0101, us(8)),
                (0x0028, 0x0102, us(7)), (0x0028, 0x0103, us(0)), (0x7FE0, 0x0010, b"\x80\x00")]
    return b"".join(elem(g, e, v) for g, e, v in elements)


def echo_command(message_id=1):
    body = (elem(0, 0x0002, uid(VERIFICATION)) + elem(0, 0x0100, us(0x0030)) + elem(0, 0x0110, us(message_id)) +
            elem(0, 0x0800, us(0x0101)))
    return elem(0, 0x0000, struct.pack("<I", len(body))) + body


def pdv_pdu(pcid, control, data):
    return pdu(0x04, struct.pack(">IBB", len(data) + 2, pcid, control) + data)


def associate(s, calling="RAWPDU"):
    s.sendall(associate_rq("PACSNODE", calling, CONTEXTS))
    t, body = recv_pdu(s)
    if t != 0x02: raise RuntimeError(f"association not accepted: {PDU_NAMES.get(t, t)} {body.hex()}")


def c_store(s, dataset, sop_instance, message_id=1):
    """One C-STORE on an open association; returns the response status (None if none came)."""
    cmd = command(SC_STORAGE, sop_instance)
    if message_id != 1:  # command() numbers every request 1
        cmd = cmd.replace(elem(0, 0x0110, us(1)), elem(0, 0x0110, us(message_id & 0xFFFF)))
    s.sendall(pdv_pdu(1, 0x03, cmd))
    for i in range(0, len(dataset), 16000):
        chunk = dataset[i:i + 16000]
        s.sendall(pdv_pdu(1, 0x02 if i + 16000 >= len(dataset) else 0x00, chunk))
    t, body = recv_pdu(s)
    return response_status(body) if t == 0x04 else None


def release(s):
    try:
        s.sendall(pdu(0x05, b"\0\0\0\0"))
        recv_pdu(s)
    except (EOFError, OSError):
        pass
    s.close()


def until_closed(s, limit, got=b""):
    """Waits for the server to close `s`: (seconds, PDU types it sent first, with `got` already
    read), seconds None if it did not."""
    start = time.monotonic()
    s.settimeout(0.2)
    while time.monotonic() - start < limit:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - start, first_pdus(got)
        if not chunk: return time.monotonic() - start, first_pdus(got)
        got += chunk
    return None, first_pdus(got)


def first_pdus(data):
    names, pos = [], 0
    while pos + 6 <= len(data):
        t, _, n = struct.unpack(">BBI", data[pos:pos + 6])
        names.append(PDU_NAMES.get(t, hex(t)))
        pos += 6 + n
    return names


class Watch:
    """Many sockets watched at once: when each is closed by the server, what it sent first."""

    def __init__(self):
        self.sel = selectors.DefaultSelector()
        self.info = {}

    def add(self, s, opened):
        s.setblocking(False)
        self.sel.register(s, selectors.EVENT_READ)
        self.info[s] = {"opened": opened, "closed": None, "data": b""}

    def run(self, limit, stop_when=lambda: False):
        end = time.monotonic() + limit
        while self.sel.get_map() and time.monotonic() < end and not stop_when():
            for key, _ in self.sel.select(timeout=0.1):
                s, rec = key.fileobj, self.info[key.fileobj]
                try:
                    chunk = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if chunk:
                    rec["data"] += chunk
                    continue
                rec["closed"] = time.monotonic()
                self.sel.unregister(s)
                s.close()

    def open_count(self):
        return len(self.sel.get_map())


def open_connections(a, first_bytes):
    """--count connections, from the --sources in turn, each sent first_bytes(i) (b"": nothing),
    watched; and how many could not be opened."""
    w, failed = Watch(), 0
    srcs = sources(a.sources)
    for i in range(a.count):
        try:
            s = connect(a.host, a.port, srcs[i % len(srcs)])
            if first_bytes(i): s.sendall(first_bytes(i))
        except OSError:
            failed += 1
            continue
        w.add(s, time.monotonic())
    return w, failed


def hold(a):
    """N connections that send nothing (or, the first --partial of them, part of an A-ASSOCIATE-RQ)
    and wait for the server to close them."""
    rq = associate_rq("PACSNODE", "PARTIAL", CONTEXTS)
    w, failed = open_connections(a, lambda i: rq[:len(rq) // 2] if i < a.partial else b"")
    print("ready", flush=True)
    w.run(a.wait)
    closed = [r["closed"] - r["opened"] for r in w.info.values() if r["closed"] is not None]
    at_once = [t for t in closed if t < a.at_once]
    later = [t for t in closed if t >= a.at_once]
    return {"opened": len(w.info), "connect_failed": failed, "closed_at_once": len(at_once), "closed_later": len(later),
            "later_min": min(later, default=None), "later_max": max(later, default=None), "still_open": w.open_count(),
            "answers": sorted({",".join(first_pdus(r["data"])) for r in w.info.values()})}


def first_pdu(a):
    """One connection whose first bytes are not a usable A-ASSOCIATE-RQ."""
    good = associate_rq("PACSNODE", "RAWPDU", CONTEXTS)
    fixed = good[6:6 + 68]  # protocol version, AE titles, reserved
    if a.kind == "p-data":
        data = pdv_pdu(1, 0x03, echo_command())
    elif a.kind == "http":
        data = b"GET / HTTP/1.1\r\nHost: pacsnode\r\n\r\n"
    elif a.kind == "length-4g":
        data = struct.pack(">BBI", 0x01, 0, 0xFFFFFFFF) + fixed
    elif a.kind == "too-short":
        data = pdu(0x01, fixed[:10])
    elif a.kind == "item-64k":
        # A whole request whose application context name is 65,000 bytes long (the called AE title
        # is a fixed 16-byte field: a "64 KB" name can only be an item).
        body = fixed + item(0x10, b"1." * 32500) + good[6 + 68 + 4 + 21:]
        data = pdu(0x01, body)
    elif a.kind == "item-claims-64k":
        # Items whose lengths claim 64 KB in a request of a few hundred bytes.
        body = fixed + struct.pack(">BBH", 0x10, 0, 0xFFFF) + b"1.2.840.10008.3.1.1.1" + struct.pack(">BBH", 0x50, 0, 0xFFFF)
        data = pdu(0x01, body)
    else:
        raise SystemExit(f"unknown kind {a.kind}")
    s = connect(a.host, a.port)
    start = time.monotonic()
    try:
        s.sendall(data)
    except OSError:
        pass
    seconds, answer = until_closed(s, a.wait)
    return {"kind": a.kind, "sent": len(data), "closed_after": seconds, "answer": answer, "since": time.monotonic() - start}


def after_association(a):
    """A proper association, then one malformed or slow thing."""
    s = connect(a.host, a.port)
    requested = time.monotonic()  # the node's timers start after this, whatever our scheduling
    associate(s)
    start = time.monotonic()
    result = {"kind": a.kind}
    answer = b""  # what the node sent while we were still sending
    try:
        if a.kind == "pdv-zero":
            s.sendall(pdu(0x04, struct.pack(">I", 0)))  # a PDV item of length 0: no context ID, no header
        elif a.kind == "pdv-odd":
            s.sendall(pdu(0x04, struct.pack(">IBB", 3, 1, 0x03) + b"\x00"))  # 1 byte of command
            s.sendall(pdu(0x04, struct.pack(">IBB", 7, 1, 0x03) + b"\x00" * 5))
        elif a.kind == "pdv-overrun":
            s.sendall(pdu(0x04, struct.pack(">IBB", 1000, 1, 0x03) + b"\x00" * 10))  # PDV longer than its PDU
        elif a.kind == "pdu-4g":
            s.sendall(struct.pack(">BBI", 0x04, 0, 0xFFFFFFFF) + struct.pack(">IBB", 100, 1, 0x03) + b"\x00" * 98)
        elif a.kind == "big-element":
            # 1 KB data set with an element that declares 0xFFFFFFF0 bytes.
            ds = one_pixel_image("1.2.826.0.1.3680043.10.1.1", "1.2.826.0.1.3680043.10.1.2", "1.2.826.0.1.3680043.10.1.3")
            ds = ds[:ds.index(struct.pack("<HH", 0x0020, 0x000D))]  # up to the Study UID...
            ds += struct.pack("<HHI", 0x0010, 0x0030, 0xFFFFFFF0) + b"A" * (1024 - len(ds) - 8)
            result["dataset_bytes"] = len(ds)
            result["status"] = c_store(s, ds, "1.2.826.0.1.3680043.10.1.3")
            release(s)
            return result
        elif a.kind == "slow":
            # A C-ECHO, one byte per second: the DIMSE timeout has to end it.
            data = pdv_pdu(3, 0x03, echo_command())
            s.settimeout(0.01)
            sent = 0
            while sent < len(data) and time.monotonic() - start < a.wait:
                s.sendall(data[sent:sent + 1])
                sent += 1
                try:
                    answer = s.recv(1)
                    result["answered_after"] = time.monotonic() - start
                    result["answered_after_request"] = time.monotonic() - requested
                    break  # an A-ABORT, or closed: the node ended it
                except socket.timeout:
                    time.sleep(1)
            result["bytes_sent"] = sent
        elif a.kind == "idle":
            pass
        else:
            raise SystemExit(f"unknown kind {a.kind}")
    except OSError as e:
        result["send_error"] = str(e)
    result["closed_after"], result["answer"] = until_closed(s, a.wait, answer)
    if result["closed_after"] is not None: result["closed_after"] = time.monotonic() - start
    return result


def slow_request(a):
    """A valid A-ASSOCIATE-RQ sent one byte per second: the pre-association timeout has to end it."""
    data = associate_rq("PACSNODE", "SLOWRQ", CONTEXTS)
    s = connect(a.host, a.port)
    start, sent = time.monotonic(), 0
    s.settimeout(1.0)
    try:
        while sent < len(data) and time.monotonic() - start < a.wait:
            s.sendall(data[sent:sent + 1])
            sent += 1
            try:
                s.recv(1)
                break  # an A-ABORT, or closed: the node ended it
            except socket.timeout:
                pass
    except OSError:
        pass
    return {"bytes_sent": sent, "of": len(data), "closed_after": time.monotonic() - start}


def many(a):
    """N connections that each send a valid A-ASSOCIATE-RQ at once, then stay idle."""
    rq = associate_rq("PACSNODE", "MANY", CONTEXTS)
    w, failed = open_connections(a, lambda i: rq)

    def answered():
        return all(r["data"] or r["closed"] for r in w.info.values())
    w.run(a.wait, answered)
    accepted = [s for s, r in w.info.items() if first_pdus(r["data"])[:1] == ["associate-ac"]]
    answers = {}
    for r in w.info.values():
        key = ",".join(first_pdus(r["data"])) or "closed"
        if r["data"][:1] == b"\x03": key += "/reason %d" % r["data"][9]
        answers[key] = answers.get(key, 0) + 1
    print("ready", json.dumps(answers), flush=True)
    # The accepted ones stay idle until the node's DIMSE timeout ends them.
    w.run(a.wait)
    ends = [w.info[s]["closed"] - w.info[s]["opened"] for s in accepted if w.info[s]["closed"]]
    return {"opened": len(w.info), "connect_failed": failed, "answers": answers, "accepted": len(accepted),
            "accepted_closed": len(ends), "accepted_closed_max": max(ends, default=None), "still_open": w.open_count()}


# Study and SOP Instance UIDs that must not become paths: (study, series, sop).
HOSTILE_UIDS = [
    ("../../../../../../tmp/pacsnode-escape", "../pacsnode-escape", "../../pacsnode-escape"),
    ("/tmp/pacsnode-escape", "/etc/pacsnode-escape", "/pacsnode-escape"),
    ("..", ".", "..."),
    ("1.2.3\x00/../../pacsnode-escape", "1.2.3.4\x00/..", "1.2.3.5\x00../../pacsnode-escape"),
    ("1." * 100, "2" * 200, "3." * 99 + "3"),
    ("1.2.840.113619.2.55.3.4.5/..", "1.2.840.113619.2.55.3.4.6/x", "1.2.840.113619.2.55.3.4.7/../../y"),
]


def hostile_uids(a):
    """One C-STORE per triple of hostile UIDs in the data set, each on its own association."""
    statuses = []
    for i, (study, series, sop) in enumerate(HOSTILE_UIDS):
        s = connect(a.host, a.port)
        associate(s)
        status = c_store(s, one_pixel_image(study, series, sop), "1.2.826.0.1.3680043.10.2.%d" % (i + 1))
        statuses.append(status)
        release(s)
    return {"statuses": statuses}


def store_many(a):
    """--count one-pixel instances of one series on one association."""
    s = connect(a.host, a.port, timeout=60)
    associate(s, "MANYSTORE")
    study, series = "1.2.826.0.1.3680043.10.3.1", "1.2.826.0.1.3680043.10.3.1.1"
    start, ok, other = time.monotonic(), 0, {}
    for i in range(a.count):
        sop = "%s.%d" % (series, i + 1)
        st = c_store(s, one_pixel_image(study, series, sop), sop, message_id=i + 1)
        if st == 0: ok += 1
        else: other[str(st)] = other.get(str(st), 0) + 1
    release(s)
    return {"sent": a.count, "success": ok, "other": other, "seconds": time.monotonic() - start}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("host")
    p.add_argument("port", type=int)
    sub = p.add_subparsers(dest="scenario", required=True)
    h = sub.add_parser("hold", help="silent or partial connections, held until the server closes them")
    h.add_argument("--count", type=int, default=1)
    h.add_argument("--partial", type=int, default=0, help="how many of them send half an A-ASSOCIATE-RQ")
    h.add_argument("--sources", help="comma-separated local addresses (127.0.0.x) to connect from, in turn")
    h.add_argument("--at-once", type=float, default=1.0, help="closed sooner than this (s) counts as closed at once")
    h.set_defaults(run=hold)
    f = sub.add_parser("first-pdu", help="a first PDU that is not a usable A-ASSOCIATE-RQ")
    f.add_argument("--kind", required=True, choices=["p-data", "http", "length-4g", "too-short", "item-64k", "item-claims-64k"])
    f.set_defaults(run=first_pdu)
    t = sub.add_parser("after-association", help="an accepted association, then something malformed or slow")
    t.add_argument("--kind", required=True, choices=["pdv-zero", "pdv-odd", "pdv-overrun", "pdu-4g", "big-element", "slow", "idle"])
    t.set_defaults(run=after_association)
    r = sub.add_parser("slow-request", help="an A-ASSOCIATE-RQ at one byte per second")
    r.set_defaults(run=slow_request)
    m = sub.add_parser("many", help="--count A-ASSOCIATE-RQs at once, the accepted ones then idle")
    m.add_argument("--count", type=int, default=200)
    m.add_argument("--sources")
    m.set_defaults(run=many)
    u = sub.add_parser("hostile-uids", help="C-STOREs whose Study/Series/SOP Instance UIDs hold /, .., NUL, 200 characters")
    u.set_defaults(run=hostile_uids)
    n = sub.add_parser("store-many", help="--count one-pixel instances on one association")
    n.add_argument("--count", type=int, default=5000)
    n.set_defaults(run=store_many)
    for sp in (h, f, t, r, m, u, n):
        sp.add_argument("--wait", type=float, default=30, help="longest wait for the server (s)")
    a = p.parse_args()
    print(json.dumps(a.run(a)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
