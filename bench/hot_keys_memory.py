"""The hot sticky keys' memory at its bound (proxy/hot_keys.py): every settled window full of
distinct ids, every new one at HOT_MIN - 1, against one alias's single window (the memory
before the windows were per client key).

    PYTHONPATH=$PWD python bench/hot_keys_memory.py [--id-chars 256]
"""

from __future__ import annotations

import argparse
import tracemalloc

from proxy.hot_keys import HOT_MIN, HotKeys


def traced(clients: int, new: int, id_chars: int) -> tuple[float, HotKeys]:
    tracemalloc.start()
    hot = HotKeys()
    for c in range(clients):
        for i in range(hot.window):
            hot.seen("bot", f"{c:08d}-{i:08d}".ljust(id_chars, "x"), f"{c:016x}")
    for c in range(new):
        for i in range(HOT_MIN - 1):
            hot.seen("bot", f"{c:08d}-n{i:07d}".ljust(id_chars, "x"), f"n{c:015x}")
    used = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    return used, hot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--id-chars", type=int, default=256)
    args = parser.parse_args()
    one, _ = traced(1, 0, args.id_chars)
    probe = HotKeys()
    full, hot = traced(probe.max_settled + 10, probe.max_new + 10, args.id_chars)
    print(f"ids of {args.id_chars} characters")
    print(f"one window (one alias, one client): {one:8.2f} MiB")
    print(f"at the bound: {len(hot.settled)} settled + {len(hot.new)} new windows: "
          f"{full:8.2f} MiB ({full / one:.0f}x)")


if __name__ == "__main__":
    main()
