"""How often a client loses a request on a kept-alive connection (issue 12): uvicorn's own
protocol with its keep-alive equal to the client's pool expiry (main: uvicorn's 5 s, httpx's
5 s) beside `tuneloop serve`'s protocol (`proxy.server.connection_options`), with the same
keep-alive (what reading before closing alone buys) and with its own, longer one.

Scaled down so that a run is short: the client's pool expires idle connections after
`--expiry` s (httpx's default is 5) and sends its next request just before that (so it reuses
the connection); the baseline server's keep-alive is the same, ours is 15 times longer. The
server runs in its own process on uvloop, with `--busy` threads of pure-Python work beside
its loop (a loaded process: its loop is late by a few ms at times). Prints the requests lost
(connection reset / closed without an answer) per server, and the ratio. Bounded (about
`--trials` x `--expiry` x 3 s, under a minute by default). Run from the repository root:

    python bench/keep_alive_race.py
    python bench/keep_alive_race.py --trials 200 --expiry 0.2
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.server import free_port  # noqa: E402

SERVER = """
import sys, threading
import uvicorn
sys.path.insert(0, {root!r})
from proxy.server import connection_options
from tuneloop.config import Settings

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({{"type": "http.response.start", "status": 200,
                 "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]}})
    await send({{"type": "http.response.body", "body": b"{{}}"}})

def busy():
    while True:
        sum(i * i for i in range(20000))

for _ in range({busy}):
    threading.Thread(target=busy, daemon=True).start()
options = {{"timeout_keep_alive": {keep_alive}}}
if {ours}:
    options = connection_options(Settings(db="/nonexistent", keep_alive_timeout_s={keep_alive}))
uvicorn.run(app, host="127.0.0.1", port={port}, loop="uvloop", log_level="error",
            access_log=False, **options)
"""


def run(ours: bool, keep_alive: float, expiry: float, trials: int, busy: int) -> int:
    port = free_port()
    code = SERVER.format(root=str(ROOT), busy=busy, keep_alive=keep_alive, ours=ours, port=port)
    server = subprocess.Popen([sys.executable, "-c", code])
    lost = 0
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(100):
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        limits = httpx.Limits(keepalive_expiry=expiry)
        with httpx.Client(limits=limits, timeout=5) as client:
            for _ in range(trials):
                client.post(url, content=b"{}")
                time.sleep(expiry * random.uniform(0.97, 0.999))  # reused, just in time
                try:
                    client.post(url, content=b"{}")
                except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                    lost += 1
    finally:
        server.terminate()
        server.wait(10)
    return lost


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--expiry", type=float, default=0.2)
    parser.add_argument("--busy", type=int, default=1)
    args = parser.parse_args()
    random.seed(12)
    base = run(False, args.expiry, args.expiry, args.trials, args.busy)
    same = run(True, args.expiry, args.expiry, args.trials, args.busy)
    ours = run(True, args.expiry * 15, args.expiry, args.trials, args.busy)
    print(f"{args.trials} requests each on a connection idle just under the client's "
          f"{args.expiry:g} s pool expiry, {args.busy} busy thread(s) in the server")
    print(f"uvicorn's protocol, keep-alive {args.expiry:g} s (= client expiry): {base} lost")
    print(f"tuneloop's protocol, keep-alive {args.expiry:g} s (= client expiry): {same} lost")
    print(f"tuneloop's protocol, keep-alive {args.expiry * 15:g} s:                {ours} lost")
    print(f"lost, baseline / ours: {base} / {ours}"
          + (f" = {base / ours:.1f}" if ours else " (ours lost none)"))

if __name__ == "__main__":
    main()
