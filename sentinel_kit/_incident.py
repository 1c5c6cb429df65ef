"""An incident is not mass death: telling Torn's "Incorrect key" storms from dead keys (pure).

Torn has answered code 2 ("Incorrect key") for valid keys during incidents, and a wrong
``--torn-url`` stand-in does the same. Parking every key that says so would make each user
re-save a key that was fine. Real populations do hold many dead keys (30-50 % after a
migration, the oldest first), so the number of code-2 answers proves nothing; keys that
*worked* do: :data:`INCIDENT_KEYS` keys that succeeded within :data:`WORKED_WITHIN`
answering code 2, with no success between them (in the order the answers arrived), is an
incident. The run then stops sending, parks none of those keys, un-parks what it parked for
code 2 since the first of them, and ends ``aborted``.

A run in which nothing succeeded parks nothing for code 2 either (a first run against the
wrong URL has no record of keys that worked): each such key gets a strike instead, and
:func:`~sentinel_kit._key_health.strike` parks it after three such runs an hour apart.

:class:`IncidentGuard` holds one run's view; the pipeline feeds it each outcome as it
arrives and asks it which parks to write. Nothing here reads the clock or does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from ._key_health import INCORRECT_KEY, KeyHealth, KeyRecord, strike
from ._models import Outcome

__all__ = ["INCIDENT_KEYS", "WORKED_WITHIN", "IncidentGuard"]

#: Keys that worked recently answering code 2, with no success between them: an incident.
INCIDENT_KEYS = 10
#: How recent a success makes a key one that "worked".
WORKED_WITHIN = timedelta(days=7)


def _incorrect_key(outcome: Outcome) -> bool:
    return not outcome.skipped and outcome.torn_code == INCORRECT_KEY


class IncidentGuard:
    """One run's watch for a Torn incident, and its rule for parking code-2 keys.

    Args:
        records: every key's :class:`~sentinel_kit._key_health.KeyRecord`, by key id, as
            the run started.
        now: when the run started (successes since ``now - window`` count as "worked").
        torn_url: the Torn URL of the run, named in the message.
        threshold: keys that worked answering code 2 that make an incident.
        window: how recent a success must be.
    """

    def __init__(
        self,
        records: Mapping[str, KeyRecord],
        *,
        now: datetime,
        torn_url: str,
        threshold: int = INCIDENT_KEYS,
        window: timedelta = WORKED_WITHIN,
    ) -> None:
        self.records = records
        self.torn_url = torn_url
        self.threshold = threshold
        self.window = window
        self._since = now - window
        self._seq = 0
        #: Arrival numbers of the keys that worked and answered code 2 since the last success.
        self._streak: list[int] = []
        #: Arrival number of every code-2 outcome, by key id.
        self._arrived: dict[str, int] = {}
        #: Code-2 outcomes, in arrival order (the strikes of a run with no success).
        self._incorrect: list[Outcome] = []
        #: Code-2 parks written, by key id (to un-park them after an incident).
        self._parked: set[str] = set()
        #: Code-2 parks waiting for the run's first success.
        self._held: list[KeyHealth] = []
        self.succeeded = False
        #: Arrival number of the first key of the streak that tripped (None: no incident).
        self.tripped_from: int | None = None

    @property
    def tripped(self) -> bool:
        """True once the run looks like an incident."""
        return self.tripped_from is not None

    def worked(self, outcome: Outcome) -> bool:
        """True when ``outcome``'s key (this ciphertext) succeeded within the window."""
        record = self.records.get(outcome.key_id)
        return record is not None and record.worked_since(outcome.ciphertext_fp, self._since)

    def observe(self, outcome: Outcome) -> bool:
        """Take one outcome, in the order answers arrive; True when it trips the guard."""
        self._seq += 1
        if outcome.ok:
            self.succeeded = True
            self._streak.clear()
            return False
        if not _incorrect_key(outcome):
            return False
        self._arrived[outcome.key_id] = self._seq
        self._incorrect.append(outcome)
        if self.tripped or not self.worked(outcome):
            return False
        self._streak.append(self._seq)
        if len(self._streak) < self.threshold:
            return False
        self.tripped_from = self._streak[0]
        return True

    @property
    def message(self) -> str:
        """The run's one-line error after an incident."""
        days = self.window.days or 1
        return (
            f"Incorrect key (code {INCORRECT_KEY}) from {self.threshold} keys that worked "
            f"within {days} days: a Torn incident? parked none; check --torn-url "
            f"({self.torn_url}) and Torn's API status page"
        )

    def admit(self, park: Sequence[KeyHealth]) -> list[KeyHealth]:
        """The parks to write now, of those ``park`` asks for.

        Code-2 parks wait for the run's first success (a run with none parks no key for
        code 2) and are dropped after an incident; other parks pass.
        """
        now: list[KeyHealth] = []
        for health in park:
            if health.last_code != INCORRECT_KEY:
                now.append(health)
            elif not self.tripped:
                self._held.append(health)
        if self.succeeded and not self.tripped and self._held:
            now += self._held
            self._parked.update(h.key_id for h in self._held)
            self._held = []
        return now

    def to_unpark(self) -> list[str]:
        """After an incident: the keys this run parked for code 2 since the first key of
        the streak (sorted)."""
        if self.tripped_from is None:
            return []
        start = self.tripped_from
        return sorted(k for k in self._parked if self._arrived.get(k, 0) >= start)

    def strikes(
        self, *, now: datetime, run_id: str | None = None
    ) -> tuple[list[KeyRecord], list[KeyHealth]]:
        """After a run with no success anywhere (and no incident): each code-2 key's new
        record, and the parks of keys that reached their third strike.

        Returns:
            ``(records, parks)``; both empty when the run had a success or tripped.
        """
        if self.succeeded or self.tripped:
            return [], []
        records: list[KeyRecord] = []
        parks: list[KeyHealth] = []
        for outcome in self._incorrect:
            record, park = strike(self.records.get(outcome.key_id), outcome, now=now, run_id=run_id)
            if record is not None:
                records.append(record)
            if park is not None:
                parks.append(park)
        return (
            sorted(records, key=lambda r: (r.user_id, r.key_id)),
            sorted(parks, key=lambda h: (h.user_id, h.key_id)),
        )
