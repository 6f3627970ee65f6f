"""Consent and erasure (pure): what a customer's erasure request is, what it removes, and how an
event without consent is landed.

An `ErasureRequest` names its subject — a canonical customer id (`cus-…`) or one identifier as
`kind:value` (`customer_id:C123`, `email_hash:…`) — and who asked. The identity coordinator, the
single writer of the identifier graph, turns it into an `Erasure`: the profile and the profiles
merged into it, and a salted SHA-256 digest of every identifier they held. The digests travel to
landing instead of the identifiers (ClickHouse computes the same digest of each row's identifiers
to find them), and the audit row keeps only their count and one digest over all of them, so no
raw identifier is written anywhere by the erasure itself.

Everything here is deterministic given its inputs (the salt is chosen once, by the coordinator,
and travels with the erasure), so an erasure replayed after a crash deletes and records the same.

An event with `consent` = false keeps its place in aggregates but not its identifiers:
`withhold_identifiers` empties them before the event is resolved, so it is never linked and never
reaches the coordinator; such events belong to no customer (`NO_CONSENT`).
"""
from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

from .identity import PRECEDENCE

#: The customer id stamped on events sent without consent: nobody's, never a profile.
NO_CONSENT = "no-consent"

_SUBJECT = re.compile(r"^(cus-[0-9a-f]{16}|(%s):.+)$" % "|".join(PRECEDENCE))


class BadSubject(ValueError):
    """An erasure subject that is neither a customer id nor a `kind:value` identifier."""


def check_subject(subject: str) -> str:
    """The subject, stripped, or BadSubject saying what a valid one looks like."""
    s = (subject or "").strip()
    if not _SUBJECT.match(s):
        raise BadSubject(f"'{s[:60]}' is not a customer id (cus- and 16 hex digits, as in the customer_id "
                         f"column) nor an identifier as kind:value with kind one of {', '.join(PRECEDENCE)} "
                         "(or email:/phone: with the raw address or number)")
    return s


@dataclass(frozen=True, slots=True)
class ErasureRequest:
    erasure_id: str
    subject: str
    requested_at: int  # epoch ms
    requester: str

    @classmethod
    def new(cls, subject: str, requester: str, now_ms: int) -> "ErasureRequest":
        return cls(uuid.uuid4().hex, check_subject(subject), now_ms, (requester or "unknown")[:200])

    def to_json(self) -> dict[str, Any]:
        return {"erasure_id": self.erasure_id, "subject": self.subject, "requested_at": self.requested_at,
                "requester": self.requester}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ErasureRequest":
        return cls(str(d["erasure_id"]), check_subject(str(d["subject"])), int(d["requested_at"]),
                   str(d.get("requester") or "unknown"))


def digest(salt: str, identifier: str) -> str:
    """Hex SHA-256 of salt + `kind:value`, as ClickHouse's lower(hex(SHA256(concat(salt, …))))."""
    return hashlib.sha256((salt + identifier).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Erasure:
    """What one erasure removes, as decided by the coordinator."""
    request: ErasureRequest
    profiles: tuple[str, ...]        # the profile first, then those merged into it
    digests: tuple[str, ...]         # salted digests of every identifier they held, sorted
    salt: str
    merges: tuple[str, ...] = ()     # merge-log records that name them (tombstoned)
    decided_at: int = 0
    found: bool = True

    @classmethod
    def of(cls, request: ErasureRequest, profiles: list[str], identifiers: set[str], salt: str,
           merges: tuple[str, ...] = (), decided_at: int = 0, found: bool = True) -> "Erasure":
        return cls(request, tuple(dict.fromkeys(profiles)), tuple(sorted(digest(salt, i) for i in identifiers)),
                   salt, tuple(sorted(set(merges))), decided_at, found)

    @property
    def combined_digest(self) -> str:
        """One digest over all identifiers' digests: proves membership without listing any."""
        return hashlib.sha256("\n".join(self.digests).encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        """Without the request's subject, which may be an identifier: the profile stands for it."""
        req = {**self.request.to_json(), "subject": self.profiles[0] if self.profiles else ""}
        return {**req, "profiles": list(self.profiles), "digests": list(self.digests),
                "salt": self.salt, "merges": list(self.merges), "decided_at": self.decided_at, "found": self.found}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Erasure":
        req = ErasureRequest(str(d["erasure_id"]), str(d.get("subject") or ""), int(d["requested_at"]),
                             str(d.get("requester") or "unknown"))
        return cls(req, tuple(d.get("profiles") or ()), tuple(d.get("digests") or ()),
                   str(d["salt"]), tuple(d.get("merges") or ()), int(d.get("decided_at") or 0),
                   bool(d.get("found", True)))


@dataclass(frozen=True, slots=True)
class ErasureRecord:
    """The audit row: counts and digests only."""
    erasure_id: str
    requested_at: int
    completed_at: int
    requester: str
    status: str  # erased | not_found
    profiles_removed: int
    identifiers_removed: int
    identifiers_digest: str
    salt: str
    rows_deleted: Mapping[str, int] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        return {"erasure_id": self.erasure_id, "requested_at": self.requested_at / 1000,
                "completed_at": self.completed_at / 1000, "requester": self.requester, "status": self.status,
                "profiles_removed": self.profiles_removed, "identifiers_removed": self.identifiers_removed,
                "identifiers_digest": self.identifiers_digest, "salt": self.salt,
                "tables": sorted(self.rows_deleted), "rows_deleted": dict(self.rows_deleted)}


def record_of(e: Erasure, rows_deleted: Mapping[str, int], completed_at: int) -> ErasureRecord:
    return ErasureRecord(e.request.erasure_id, e.request.requested_at, completed_at, e.request.requester,
                         "erased" if e.found else "not_found", len(e.profiles), len(e.digests),
                         e.combined_digest, e.salt, dict(rows_deleted))


def withholds_consent(event: Mapping[str, Any]) -> bool:
    return event.get("consent") is False


def withhold_identifiers(event: dict[str, Any]) -> dict[str, Any]:
    """The event without identifiers (in place): every identifier field set to None."""
    event["identifiers"] = {k: None for k in PRECEDENCE}
    return event


def surviving_profile(profile: str, merges: Mapping[str, Mapping[str, Any]]) -> str:
    """The profile `profile` lives on in: followed up its merges into others (an operator may name
    a customer by an id from before a merge), stopping at a cycle."""
    into = {str(m["loser"]): str(m["winner"]) for m in merges.values() if m.get("status") == "merged"}
    seen = {profile}
    while profile in into and into[profile] not in seen:
        profile = into[profile]
        seen.add(profile)
    return profile


def erasure_scope(profile: str, merges: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[str], set[str]]:
    """From the merge log (merge id -> latest decision), what an erasure of `profile` reaches:
    the profile and every profile merged into it, transitively (an unmerged merge gave its
    identifiers back, so its loser is not reached); the ids of every decision that names one of
    them; the identifiers those merges moved. Returns (profiles, merge ids, identifiers)."""
    profiles = [profile]
    reached = {profile}
    grew = True
    while grew:
        grew = False
        for m in merges.values():
            if m.get("status") == "merged" and m.get("winner") in reached and m.get("loser") not in reached:
                profiles.append(str(m["loser"]))
                reached.add(str(m["loser"]))
                grew = True
    ids: set[str] = set()
    named = []
    for mid, m in merges.items():
        if m.get("winner") in reached or m.get("loser") in reached:
            named.append(mid)
            if m.get("status") == "merged":
                ids.update(str(i) for i in m.get("moved") or ())
    return profiles, sorted(named), ids
