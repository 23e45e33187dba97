"""RATT's lookup, re-created: a SHA-224 of the tag, then a linear scan of the member list.

Origin: makeitlabs/ratt (MIT licence, "Copyright 2018 MakeIt Labs"). A tag read
on its 125 kHz reader is hashed (`RFID.hash_tag` in `firmware/app/RFID.py`,
commit e36c063b: SHA-224 of the tag as ten decimal digits, in hex), and the
hash is looked up in the access list downloaded as JSON, a list of member
records, by `ACL.search` (`firmware/rpi/app/ACL.py`): under a mutex, each
record's `tagid` is compared in turn until one matches. A record whose
`allowed` is `"allowed"` may use the tool. This module is fabpass's own
re-creation of that path (nothing of theirs is copied or fetched); its records
carry the fields RATT's MemberRecord reads.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any


def hash_tag(tag: int) -> str:
    return hashlib.sha224(b"%010d" % tag).hexdigest()


class Ratt:
    def __init__(self, tags: list[int]) -> None:
        self._records: list[dict[str, Any]] = [
            {"member": f"member.{i}", "nickname": f"m{i}", "level": 0, "tagid": hash_tag(tag),
             "last_accessed": "", "warning": "", "plan": "pro", "allowed": "allowed"}
            for i, tag in enumerate(tags)]
        self._mutex = threading.Lock()

    def search(self, tag_hash: str) -> dict[str, Any] | None:
        with self._mutex:
            for record in self._records:
                if record["tagid"] == tag_hash:
                    return record
        return None

    def decide(self, tag: int) -> bool:
        record = self.search(hash_tag(tag))
        return record is not None and record["allowed"] == "allowed"
