"""Compare two ``UCML_RECORD_WRITES`` records: which test files changed bytes.

Usage: python tools/compare_writes.py before.jsonl after.jsonl
Exit 0 when every file written in both runs has the same sha256; otherwise lists the
differences (test, file) and exits 1. Files written in only one run are listed apart.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def load(path: str) -> dict[tuple[str, str], list[str]]:
    seen: dict[tuple[str, str], list[str]] = defaultdict(list)
    with open(path) as handle:
        for line in handle:
            row = json.loads(line)
            seen[(row["test"], row["name"])].append(row["sha256"])
    return seen


def main(before_path: str, after_path: str) -> int:
    before, after = load(before_path), load(after_path)
    changed = [key for key in before if key in after and before[key] != after[key]]
    only_before = sorted(set(before) - set(after))
    only_after = sorted(set(after) - set(before))
    common = len(set(before) & set(after))
    print(f"{common} (test, file) pairs in both runs; {len(changed)} changed bytes")
    for test, name in sorted(changed):
        print(f"  CHANGED {test} :: {name}")
    for label, keys in (("only before", only_before), ("only after", only_after)):
        if keys:
            print(f"{len(keys)} {label}:")
            for test, name in keys[:50]:
                print(f"  {test} :: {name}")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
