"""Fabman (fabman.io) as a member source: members, their keys as badges, their
trainings as inductions, through Fabman's documented REST API (v1).

- `GET /members?embed=key&embed=trainings`, and `GET /training-courses` for
  the courses' titles. Each page's `Link: <…>; rel="next"` is followed as given
  (Fabman asks clients not to build page URLs); an empty `Link` ends it. The
  number of records read must equal `X-Total-Count`, or the listing is refused
  as truncated.
- 429 Too Many Requests: wait (`Retry-After`, else at least 2 s, doubling) and
  ask again, up to `RETRIES` times.
- A member: `id` (as text), `firstName` `lastName`, `state` `active` (else
  suspended); an active key's `token` is a badge (a token that is not a badge
  is left out with a warning); a training whose course is active is the
  induction named by the course's title in lowercase with dashes
  ("Laser cutter" -> `laser-cutter`), valid through its `untilDate`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from agent.core.model import BadBadge, normalise_list_badge
from agent.labsync.sources import TIMEOUT_S, Listing, SourceError, SourceUnreachable

RETRIES = 6
PAGE_SIZE = 500
_SLUG = re.compile(r"[^a-z0-9]+")


def induction_name(title: str) -> str:
    return _SLUG.sub("-", title.casefold()).strip("-")


@dataclass
class FabmanSource:
    """`api` is the API's root, e.g. https://fabman.io/api/v1; `token` an API key."""

    api: str
    token: str
    retry_wait: float = 2.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    @property
    def name(self) -> str:
        return f"fabman {self.api}"

    def _get(self, session: Any, url: str, params: dict[str, Any] | None) -> Any:
        import requests

        wait = self.retry_wait
        for _ in range(RETRIES + 1):
            try:
                response = session.get(url, params=params, timeout=TIMEOUT_S)
            except requests.RequestException as err:
                raise SourceUnreachable(f"{self.name}: {err}") from None
            if response.status_code != 429:
                break
            retry_after = response.headers.get("Retry-After", "")
            self.sleep(max(wait, float(retry_after)) if retry_after.isdigit() else wait)
            wait *= 2
        else:
            raise SourceUnreachable(f"{self.name}: still 429 Too Many Requests after {RETRIES} retries")
        if response.status_code == 401:
            raise SourceError(f"{self.name}: 401 Unauthorized: the API key was refused")
        if response.status_code != 200:
            raise SourceError(f"{self.name}: HTTP {response.status_code} {response.reason} for {url}")
        return response

    def _collection(self, session: Any, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        url: str | None = f"{self.api.rstrip('/')}/{path}"
        total, read = None, 0
        first = True
        while url:
            response = self._get(session, url, params if first else None)
            first = False
            try:
                page = response.json()
            except ValueError:
                raise SourceError(f"{self.name}: {path}: the answer is not JSON") from None
            if not isinstance(page, list) or not all(isinstance(item, dict) for item in page):
                raise SourceError(f"{self.name}: {path}: expected a JSON array of objects")
            count = response.headers.get("X-Total-Count")
            if count is not None:
                total = int(count) if count.isdigit() else total
            read += len(page)
            yield from page
            url = response.links.get("next", {}).get("url")
        if total is not None and read != total:
            raise SourceError(f"{self.name}: {path}: read {read} records, X-Total-Count says {total} (truncated)")

    def fetch(self) -> Listing:
        import requests

        with requests.Session() as session:
            session.headers.update({"Authorization": f"Bearer {self.token}", "Accept": "application/json"})
            courses = {course.get("id"): course for course in
                       self._collection(session, "training-courses", {"limit": PAGE_SIZE})}
            listing = Listing([])
            for member in self._collection(session, "members",
                                           {"embed": ["key", "trainings"], "limit": PAGE_SIZE}):
                listing.rows.append(self._member(member, courses, listing.warnings))
        return listing

    def _member(self, raw: dict[str, Any], courses: dict[Any, dict[str, Any]],
                warnings: list[str]) -> tuple[str, dict[str, Any]]:
        member_id = str(raw.get("id", ""))
        place = f"{self.name} member {member_id}"
        embedded = raw.get("_embedded") or {}
        badges = []
        key = embedded.get("key") or {}
        if key.get("state", "active") == "active" and key.get("token"):
            try:
                badges.append(normalise_list_badge(str(key["token"])))
            except BadBadge as err:
                warnings.append(f"{place}: key left out: {err}")
        inductions: dict[str, str | None] = {}
        for training in embedded.get("trainings") or []:
            course = courses.get(training.get("trainingCourse"))
            if not course or course.get("state", "active") != "active" or not course.get("title"):
                continue
            name = induction_name(course["title"])
            until = training.get("untilDate")
            if name not in inductions or (inductions[name] is not None and (until is None or until > inductions[name])):
                inductions[name] = until
        full_name = " ".join(str(part) for part in (raw.get("firstName"), raw.get("lastName")) if part)
        return place, {"id": member_id, "name": full_name,
                       "status": "active" if raw.get("state") == "active" else "suspended",
                       "badges": badges, "expires": None, "roles": [], "inductions": inductions}
