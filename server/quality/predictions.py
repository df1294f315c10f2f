"""A bounded, time-limited record of recent predictions, so that ground truth arriving later can be scored.

Per model: request id → when it was predicted and, per version that answered it (the primary and any shadow
mirror), the scored output's rows (a copy: never a view that would pin a whole batch's output). At most
``max_records`` ids are held, oldest evicted first; records older than ``ttl_seconds`` are dropped as new ones
arrive, their ids remembered (ids only, at most ``max_records`` of them) so that late feedback is answered
"expired" rather than "unknown". Memory is therefore bounded by the cap, whatever the traffic.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import numpy as np


class Lookup(Enum):
    FOUND = "found"
    UNKNOWN = "unknown_id"
    EXPIRED = "expired"
    SCORED = "already_scored"


@dataclass(slots=True)
class Record:
    created: float
    #: version → that version's rows of the scored output
    rows: dict[int, np.ndarray] = field(default_factory=dict)


class PredictionStore:
    """Request id → :class:`Record`; every operation is O(1) amortised (an insertion-ordered dict)."""

    def __init__(self, max_records: int, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        if max_records <= 0 or ttl_seconds <= 0:
            raise ValueError("max_records and ttl_seconds must be positive")
        self.max_records = max_records
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._records: OrderedDict[str, Record] = OrderedDict()
        #: ids dropped for age, and ids already scored: bounded tombstones for clear answers
        self._expired: OrderedDict[str, None] = OrderedDict()
        self._scored: OrderedDict[str, None] = OrderedDict()
        #: records dropped by the cap (not by age)
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._records)

    def add(self, request_id: str, version: int, rows: np.ndarray) -> None:
        """Remember ``version``'s rows for ``request_id`` (a shadow joins the primary's record)."""
        now = self._clock()
        record = self._records.get(request_id)
        if record is None:
            self._drop_expired(now)
            record = self._records[request_id] = Record(now)
            if len(self._records) > self.max_records:
                self._records.popitem(last=False)
                self.evicted += 1
        record.rows[version] = rows

    def take(self, request_id: str) -> tuple[Lookup, Record | None]:
        """The record to score, removed so an id is scored once; or why there is none."""
        record = self._records.pop(request_id, None)
        if record is None:
            if request_id in self._scored:
                return Lookup.SCORED, None
            if self._expired.pop(request_id, 0) is None:
                return Lookup.EXPIRED, None
            return Lookup.UNKNOWN, None
        if self._clock() - record.created > self.ttl_seconds:
            _remember(self._expired, request_id, self.max_records)
            return Lookup.EXPIRED, None
        _remember(self._scored, request_id, self.max_records)
        return Lookup.FOUND, record

    def restore(self, request_id: str, record: Record) -> None:
        """Put back a record whose feedback was refused (a malformed target), so a corrected one can score it."""
        self._scored.pop(request_id, None)
        self._records[request_id] = record
        self._records.move_to_end(request_id, last=False)  # keep its age order: it is among the oldest

    def _drop_expired(self, now: float) -> None:
        records = self._records
        while records:
            request_id, record = next(iter(records.items()))
            if now - record.created <= self.ttl_seconds:
                return
            records.popitem(last=False)
            _remember(self._expired, request_id, self.max_records)


def _remember(ids: OrderedDict[str, None], request_id: str, cap: int) -> None:
    ids[request_id] = None
    if len(ids) > cap:
        ids.popitem(last=False)
