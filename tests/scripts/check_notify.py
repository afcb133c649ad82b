#!/usr/bin/python3
"""Plays systemd's part for Type=notify: a NOTIFY_SOCKET and WATCHDOG_USEC for the daemon, then
checks READY=1 comes once the port accepts connections, WATCHDOG=1 pings follow, and SIGTERM
gives STOPPING=1 and exit code 0.

Usage: check_notify.py PACSNODE_BINARY WORKDIR
"""
import os, signal, socket, subprocess, sys, time


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def main():
    binary, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    port = free_port()
    cfg = os.path.join(work, "notify.toml")
    with open(cfg, "w") as f:
        f.write(f'[node]\nport = {port}\n[storage]\nroot = "{work}/storage"\nmin_free_mb = 0\n')
    sock_path = os.path.join(work, "notify.sock")
    if os.path.exists(sock_path): os.unlink(sock_path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(20)
    env = dict(os.environ, NOTIFY_SOCKET=sock_path, WATCHDOG_USEC="400000")
    proc = subprocess.Popen([binary, "run", "--config", cfg], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env["WATCHDOG_PID"] = str(proc.pid)
    messages = []
    def receive(until):
        while True:
            msg = sock.recv(4096).decode()
            messages.append(msg)
            if until in msg: return msg
    ready = receive("READY=1")
    # READY means listening: a connection must succeed right away.
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert f"listening on 127.0.0.1:{port}" in ready, ready
    receive("WATCHDOG=1")
    receive("WATCHDOG=1")
    proc.send_signal(signal.SIGTERM)
    receive("STOPPING=1")
    code = proc.wait(timeout=60)
    assert code == 0, f"exit code {code}"
    print(f"ok: READY, {sum('WATCHDOG=1' in m for m in messages)} watchdog pings, STOPPING, exit 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
