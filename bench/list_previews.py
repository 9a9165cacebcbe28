"""One page of the review list over big rows (issue 12, r12x3 LOW 5): main vs this checkout.

    python bench/list_previews.py [--rows 20] [--mb 25]

Builds one DuckDB file with `--rows` logged chats of `--mb` MB each (half in the question,
half in the echoed answer; made in SQL with `repeat`, no upstream), then for each checkout
(main, in a temporary git worktree, and this one) starts a real `tuneloop serve` on it and
asks `GET /admin/interactions?limit=50` once (the browse page's `compact=true` too), and
`GET /admin/interactions/{id}` of one row (whole on main; past `item_full_max_chars` here).
It prints the answer's bytes, its time and the server's RSS before, at its peak (sampled every
10 ms) and after, and the ratios main / this. Loopback only; about two minutes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.rss import PeakRss, rss_mb

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "reviewer-token-abcdefghijklmnop"
ADMIN = "admin-token-abcdefghijklmnopqrstu"
# the search indexer's first look at the store (its sizes of the newest rows, read in DuckDB,
# so in this process) takes about 400 MB for a second after start, and again every ~10 s:
# the request is made after the first, and a long one (main's) may overlap the next
SETTLE_S = 4.0
FIRST = "01900000-0000-7000-8000-000000000000"
CASES = (("", "/admin/interactions", {"limit": "50"}),
         ("compact", "/admin/interactions", {"limit": "50", "compact": "true"}),
         ("one item", f"/admin/interactions/{FIRST}", {}))



def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(checkout: Path, db: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(checkout), "TUNELOOP_REVIEWER_TOKEN": TOKEN,
           "TUNELOOP_ADMIN_TOKEN": ADMIN, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    server = subprocess.Popen(
        [sys.executable, "-m", "tuneloop", "serve", "--port", str(port), "--db", str(db),
         "--upstream", "http://127.0.0.1:9/v1"], cwd=checkout, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"{checkout}: the server did not start")


def stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def fill(db: Path, rows: int, mb: int) -> None:
    """`rows` chats of `mb` MB: a question and its echo of mb/2 MB each."""
    half = mb * 1_000_000 // 2
    con = duckdb.connect(str(db))
    try:
        for n in range(rows):
            con.execute(
                "INSERT INTO interactions (id, created_at, endpoint, model, traffic, request, "
                "response, status_code, finish, stream, tags) VALUES (?, now(), "
                "'chat.completions', 'gpt-4o-mini', 'production', "
                "json_object('model', 'gpt-4o-mini', 'messages', json_array(json_object("
                "'role', 'user', 'content', repeat(?, ?)))), "
                "json_object('choices', json_array(json_object('index', 0, 'message', "
                "json_object('role', 'assistant', 'content', repeat(?, ?))))), 200, "
                "'completed', false, [])",
                [f"0190{n:04d}-0000-7000-8000-000000000000", chr(97 + n % 26), half,
                 chr(65 + n % 26), half])
    finally:
        con.close()


def measure(url: str, pid: int, path: str, params: dict[str, str]
            ) -> tuple[int, float, int, int, int]:
    started = time.monotonic()
    with PeakRss(pid) as rss:
        answer = httpx.get(f"{url}{path}", params=params, timeout=120,
                           headers={"authorization": f"Bearer {TOKEN}"})
        answer.raise_for_status()
    elapsed = time.monotonic() - started
    size = len(answer.content)
    del answer
    time.sleep(0.5)
    return size, elapsed, rss.base, rss.peak, rss_mb(pid)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--mb", type=int, default=25)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="list-previews-"))
    baseline = work / "main"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach",
                    str(baseline), "main"], check=True)
    try:
        db = work / "tuneloop.duckdb"
        server, _ = start(ROOT, db)  # creates the schema
        stop(server)
        fill(db, args.rows, args.mb)
        print(f"{args.rows} rows of {args.mb} MB; GET /admin/interactions?limit=50, once each")
        print(f"{'checkout':8} {'params':14} {'bytes':>13} {'s':>6} {'rss MB':>6} "
              f"{'peak':>6} {'after':>6}")
        results: dict[tuple[str, str], tuple[int, float, int, int, int]] = {}
        for name, checkout in (("main", baseline), ("this", ROOT)):
            for label, path, params in CASES:
                server, url = start(checkout, db)  # a fresh process: its own peak
                time.sleep(SETTLE_S)
                try:
                    got = measure(url, server.pid, path, params)
                finally:
                    stop(server)
                results[name, label] = got
                size, elapsed, base, peak, after = got
                print(f"{name:8} {label or 'full':14} {size:13,} {elapsed:6.2f} {base:6} "
                      f"{peak:6} {after:6}")
        for label, _, _ in CASES:
            m, t = results["main", label], results["this", label]
            print(f"main / this ({label or 'full'}): bytes {m[0] / max(t[0], 1):,.0f}x, time "
                  f"{m[1] / max(t[1], 1e-9):.1f}x, peak RSS growth "
                  f"{(m[3] - m[2]) / max(t[3] - t[2], 1):.1f}x")
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                        str(baseline)], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
