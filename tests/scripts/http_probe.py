#!/usr/bin/python3
"""Checks of pacsnode's HTTP server from the outside, for tests/integration/test_scp_http.cpp.

  http_probe.py metrics URL TOKEN
      GET URL/metrics with the token, parse it with prometheus_client's strict text parser and
      print one JSON object: {"<name>{label=value,...}": value, ...} (labels sorted). Exit 1 with the
      parser's message if the text does not parse.
  http_probe.py hostile HOST PORT MAX_CONNECTIONS
      Plays slow and greedy clients while checking that GET /healthz is still answered:
      a header larger than 16 KiB (expects 431), MAX_CONNECTIONS + 20 idle connections at once (the
      surplus is closed by the server), a client that sends half a request line and stops (cut off
      after the request timeout). Prints a JSON object of what it saw.
"""
import json
import socket
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def metrics(url, token):
    rq = urllib.request.Request(url + "/metrics", headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(rq, timeout=10) as r:
        ctype = r.headers.get("Content-Type", "")
        text = r.read().decode("utf-8")
    out = {}
    families = 0
    for fam in text_string_to_metric_families(text):
        families += 1
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    out["_families"] = families
    out["_content_type_ok"] = 1 if ctype.startswith("text/plain") and "0.0.4" in ctype else 0
    print("RESULT " + json.dumps(out, sort_keys=True))


def raw(host, port, data, timeout=10):
    s = socket.create_connection((host, port), timeout=timeout)
    s.sendall(data)
    got = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
            if b"\r\n\r\n" in got and b"Content-Length" in got:
                head, _, body = got.partition(b"\r\n\r\n")
                n = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
                if len(body) >= n:
                    break
    except socket.timeout:
        pass
    s.close()
    return got


def status_of(resp):
    try:
        return int(resp.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


def healthz(host, port):
    return status_of(raw(host, port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))


def hostile(host, port, max_connections):
    out = {}
    big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    resp = raw(host, port, big)
    out["huge_header_status"] = status_of(resp)
    out["huge_header_json"] = 1 if b'"error"' in resp else 0
    out["garbage_status"] = status_of(raw(host, port, b"NOT HTTP AT ALL\r\n\r\n"))
    out["healthz_after_huge_header"] = healthz(host, port)

    # A slow client: half a request line, then nothing. It must be cut off.
    slow = socket.create_connection((host, port), timeout=60)
    slow.sendall(b"GET /hea")
    started = time.monotonic()

    # Greedy clients: more idle connections than the server serves at once.
    idle = []
    for _ in range(max_connections + 20):
        try:
            idle.append(socket.create_connection((host, port), timeout=5))
        except OSError:
            break
    out["opened"] = len(idle)
    # The surplus is closed by the server at once: recv returns b"" on those.
    closed = 0
    for s in idle:
        s.settimeout(0.2)
        try:
            if s.recv(1) == b"":
                closed += 1
        except socket.timeout:
            pass
        except OSError:
            closed += 1
    out["closed_by_server"] = closed
    for s in idle:
        s.close()
    # Once they are gone the server answers again (it may take a moment to see the closes).
    deadline = time.monotonic() + 10
    status = 0
    while time.monotonic() < deadline:
        status = healthz(host, port)
        if status == 200:
            break
        time.sleep(0.05)
    out["healthz_after_idle"] = status
    # The slow client is cut off after the request timeout.
    slow.settimeout(60)
    try:
        rest = slow.recv(1024)
        out["slow_cut_off"] = 1 if rest == b"" or b"HTTP/1.1" in rest else 0
    except OSError:
        out["slow_cut_off"] = 1
    out["slow_cut_after_s"] = round(time.monotonic() - started, 1)
    slow.close()
    print("RESULT " + json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "metrics":
        metrics(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] == "hostile":
        hostile(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)
