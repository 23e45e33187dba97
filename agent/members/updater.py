"""`python -m agent.members.updater DIR`: write the member list on standard input into the cache
in DIR, in a process of its own, and answer one JSON object on standard output:
`{"version", "count"}`, `{"version", "cached"}` (not newer), `{"error", "version"}` (the
list cannot be used) or `{"error", "storage": true}` (this machine could not write it).

The agent runs this for lists from the broker: parsing and validating 100,000
members holds a Python process's GIL for seconds, and the agent's taps must not
wait for it. The cache's own rename makes the new list visible to the agent.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys

from agent.members.badgehash import BadgeHasher
from agent.members.cache import MemberCache, VersionNotNewer
from agent.members.snapshot import load_json
from agent.members.update import update_cache


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.members.updater")
    parser.add_argument("directory")
    parser.add_argument("--public-key")
    parser.add_argument("--hash-key-file")
    args = parser.parse_args(argv)
    payload = sys.stdin.buffer.read()
    cache = MemberCache(args.directory)
    try:
        hasher = BadgeHasher.from_file(args.hash_key_file) if args.hash_key_file else None
        updated = update_cache(cache, lambda: load_json(payload, args.public_key, check_members=False), hasher)
    except VersionNotNewer as err:
        answer = {"version": err.version, "cached": err.cached}
    except ValueError as err:
        answer = {"error": str(err), "version": getattr(err, "version", None)}
    except (OSError, sqlite3.Error) as err:
        answer = {"error": str(err), "storage": True}
    else:
        answer = {"version": updated.version, "count": updated.count}
    finally:
        cache.close()
    sys.stdout.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
