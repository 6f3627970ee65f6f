"""Identity resolution (pure): an identifier graph with merge protection.

Events that carry two or more identifiers link them. Every identifier belongs to at most one
profile; a profile's canonical id is fixed at its first sighting (`cus-` + a hash of that first
identifier and the event that brought it, so a replay names it the same, the id does not reveal
the identifier, and an identifier seen again after its profile was erased starts a new profile
under a new id). When an event joins identifiers of two profiles the
profiles **merge**: the older profile (earlier first sighting; ties → smaller id) survives, the
other's identifiers move to it, and a `Merge` says who, why and on which event.

Merge protection (Segment-style): blocked values (empty, all zeros, -1, null, undefined,
anonymous, configured shared devices/terminals) never link; per-profile limits (default 1
customer_id, 5 email_hash, 5 phone_hash, 10 device_id) refuse any link or merge that would break
them, and each refusal is returned with its reason. The event then belongs to the profile of its
strongest identifier.

`IdentityGraph` is a single-writer structure: one coordinator owns it; replicas rebuild it by
replaying `Mapping`s (`apply`). `resolve` is deterministic for a given sequence of calls.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Protocol, TypeVar, overload

#: Strongest first: a login id beats a loyalty card beats a hashed email ... beats a cookie.
PRECEDENCE: tuple[str, ...] = ("customer_id", "loyalty_id", "email_hash", "phone_hash",
                               "order_id", "device_id", "anonymous_id")

#: Values that never identify anybody.
BLOCKED_VALUES: frozenset[str] = frozenset({"", "0", "-1", "null", "none", "undefined", "nan",
                                            "anonymous", "unknown", "n/a", "guest", "test"})

DEFAULT_LIMITS: Mapping[str, int] = {"customer_id": 1, "email_hash": 5, "phone_hash": 5,
                                     "device_id": 10, "loyalty_id": 3}


def is_blocked(value: Any, shared: frozenset[str] = frozenset()) -> bool:
    if value is None or not isinstance(value, str):
        return True
    v = value.strip().lower()
    return v in BLOCKED_VALUES or not v.strip("0-") or value in shared  # "", "000", "--0": blocked


def usable_identifiers(identifiers: Mapping[str, Any], shared: frozenset[str] = frozenset()) -> list[str]:
    """`kind:value` strings of the usable identifiers, strongest first (hot: every event)."""
    out = []
    for kind in PRECEDENCE:
        value = identifiers.get(kind)
        if value is not None and not is_blocked(value, shared):
            out.append(f"{kind}:{value}")
    return out


def customer_key(identifiers: Mapping[str, Any]) -> str:
    """Routing key before resolution: the strongest usable identifier ('unidentified' if none)."""
    ids = usable_identifiers(identifiers)
    return ids[0] if ids else "unidentified"


def profile_id_for(first_identifier: str, event_id: str = "") -> str:
    seed = f"{first_identifier}|{event_id}" if event_id else first_identifier
    return "cus-" + hashlib.sha1(seed.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Merge:
    merge_id: str
    winner: str
    loser: str
    event_id: str
    reason: str
    occurred_at: int
    moved: tuple[str, ...]  # identifiers that moved from loser to winner
    status: str = "merged"  # merged | refused | unmerged


@dataclass(frozen=True, slots=True)
class Mapping_:
    """One changelog entry: identifier → profile (profile None = identifier released)."""
    identifier: str
    profile: str | None


@dataclass(frozen=True, slots=True)
class Resolution:
    customer_id: str
    mappings: tuple[Mapping_, ...] = ()
    created: tuple[tuple[str, int], ...] = ()  # (profile, first seen) for new profiles
    merges: tuple[Merge, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.mappings or self.created or self.merges)


V = TypeVar("V")
T = TypeVar("T")


class GraphMap(Protocol[V]):
    """What the graph uses of its maps: the part of dict's interface a bounded map that spills
    to disk also has (it is no full MutableMapping: no views, no iteration over keys)."""
    @overload
    def get(self, key: str, /) -> V | None: ...
    @overload
    def get(self, key: str, default: V, /) -> V: ...
    @overload
    def get(self, key: str, default: T, /) -> V | T: ...
    @overload
    def pop(self, key: str, /) -> V: ...
    @overload
    def pop(self, key: str, default: None, /) -> V | None: ...
    def setdefault(self, key: str, default: V, /) -> V: ...
    def __getitem__(self, key: str, /) -> V: ...
    def __setitem__(self, key: str, value: V, /) -> None: ...
    def __contains__(self, key: str, /) -> bool: ...
    def __len__(self) -> int: ...
    def items(self) -> Iterable[tuple[str, V]]: ...
    def values(self) -> Iterable[V]: ...


@dataclass
class IdentityGraph:
    """The maps are dicts by default; a worker passes bounded ones (any `GraphMap`: dict's
    `get`/`pop`/`setdefault`/`[]=`/`in`, whose member sets may be mutated in place right after
    they are read) so the graph's memory stays flat."""
    limits: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    shared: frozenset[str] = frozenset()
    owner: GraphMap[str] = field(default_factory=dict)         # identifier -> profile
    members: GraphMap[set[str]] = field(default_factory=dict)  # profile -> identifiers
    first_seen: GraphMap[int] = field(default_factory=dict)    # profile -> event time

    # -- replay --------------------------------------------------------------------------
    def apply(self, identifier: str, profile: str | None) -> None:
        """Replay one changelog mapping (idempotent)."""
        old = self.owner.pop(identifier, None)
        if old is not None:
            held = self.members.get(old)
            if held is not None:
                held.discard(identifier)
                if not held and old not in self.first_seen:
                    # a profile already gone (merged away, erased: its first sighting tombstoned,
                    # maybe replayed from another partition first) keeps no empty entry
                    self.members.pop(old, None)
        if profile is not None:
            self.owner[identifier] = profile
            self.members.setdefault(profile, set()).add(identifier)

    def apply_profile(self, profile: str, first_seen: int | None) -> None:
        if first_seen is None:
            self.first_seen.pop(profile, None)
            self.members.pop(profile, None)
        else:
            self.first_seen.setdefault(profile, first_seen)

    # -- lookups ---------------------------------------------------------------------------
    def lookup(self, identifiers: Mapping[str, Any]) -> str | None:
        """The profile when every usable identifier is known and they agree, else None
        (the event needs the coordinator)."""
        found = None
        ids = usable_identifiers(identifiers, self.shared)
        if not ids:
            return None
        for ident in ids:
            p = self.owner.get(ident)
            if p is None or (found is not None and p != found):
                return None
            found = p
        return found

    def _count(self, profile: str, kind: str, extra: Iterable[str] = ()) -> int:
        prefix = kind + ":"
        n = sum(1 for i in self.members.get(profile, ()) if i.startswith(prefix))
        return n + sum(1 for i in extra if i.startswith(prefix))

    def _fits(self, profile: str, incoming: Iterable[str]) -> str | None:
        """None if `incoming` identifiers fit into `profile`, else the limit they break."""
        incoming = list(incoming)
        for kind, limit in self.limits.items():
            if self._count(profile, kind, incoming) > limit:
                return f"limit:{kind}>{limit}"
        return None

    # -- the single writer's decision ----------------------------------------------------------
    def resolve(self, event_id: str, identifiers: Mapping[str, Any], occurred_at: int) -> Resolution:
        ids = usable_identifiers(identifiers, self.shared)
        if not ids:
            return Resolution("unidentified")
        mappings: list[Mapping_] = []
        created: list[tuple[str, int]] = []
        merges: list[Merge] = []
        owners: list[str] = []
        for ident in ids:  # strongest first
            p = self.owner.get(ident)
            if p is not None and p not in owners:
                owners.append(p)
        strongest = ids[0]
        target = self.owner.get(strongest)
        if target is None:
            # the strongest identifier is new: it joins the profile the event otherwise points
            # to, unless that breaks a limit (e.g. a second customer_id on a shared device)
            if owners and self._fits(owners[0], [strongest]) is None:
                target = owners[0]
            else:
                target = profile_id_for(strongest, event_id)
                if target not in self.first_seen:
                    created.append((target, occurred_at))
                self.first_seen.setdefault(target, occurred_at)
                self.members.setdefault(target, set())
        for ident in ids:  # new identifiers join the target, within its limits
            if ident in self.owner:
                continue
            problem = self._fits(target, [ident])
            if problem:
                mid = hashlib.sha1(f"{target}|{ident}|{event_id}".encode()).hexdigest()[:16]
                merges.append(Merge(mid, target, ident, event_id,
                                    f"refused ({problem}): {ident.split(':', 1)[0]} not linked",
                                    occurred_at, (), "refused"))
                continue
            self.apply(ident, target)
            mappings.append(Mapping_(ident, target))
        joined = " + ".join(i.split(":", 1)[0] for i in ids)
        for other in owners:
            if other == target:
                continue
            winner, loser = self._order(target, other)
            moving = sorted(self.members.get(loser, ()))
            mid = hashlib.sha1(f"{winner}|{loser}|{event_id}".encode()).hexdigest()[:16]
            problem = self._fits(winner, moving)
            if problem:
                merges.append(Merge(mid, winner, loser, event_id,
                                    f"refused ({problem}): event links {joined}", occurred_at, (), "refused"))
                continue
            for ident in moving:
                self.apply(ident, winner)
                mappings.append(Mapping_(ident, winner))
            self.members.pop(loser, None)
            self.first_seen.pop(loser, None)
            merges.append(Merge(mid, winner, loser, event_id, f"event links {joined}", occurred_at,
                                tuple(moving)))
            target = winner
        return Resolution(target, tuple(mappings), tuple(created), tuple(merges))

    def _order(self, a: str, b: str) -> tuple[str, str]:
        ka = (self.first_seen.get(a, 1 << 62), a)
        kb = (self.first_seen.get(b, 1 << 62), b)
        return (a, b) if ka <= kb else (b, a)

    def unmerge(self, merge: Merge) -> list[Mapping_]:
        """Move the identifiers a merge moved back to the loser, going forward."""
        out = []
        for ident in merge.moved:
            if self.owner.get(ident) == merge.winner:
                self.apply(ident, merge.loser)
                out.append(Mapping_(ident, merge.loser))
        self.first_seen.setdefault(merge.loser, merge.occurred_at)
        return out

    def erase(self, profile: str) -> list[Mapping_]:
        """Forget a profile (a customer's erasure): every identifier it holds is released
        (mappings to None, in a stable order) and its first sighting dropped. An identifier
        released here that comes again starts a new profile, with a new id, linked to nothing."""
        out = []
        for ident in sorted(self.members.get(profile, ())):
            if self.owner.get(ident) == profile:
                self.apply(ident, None)
                out.append(Mapping_(ident, None))
        self.members.pop(profile, None)
        self.first_seen.pop(profile, None)
        return out


@dataclass
class LookupGraph(IdentityGraph):
    """A replica's graph: only what `lookup` reads (identifier -> profile). Replaying the same
    changelog gives the same `owner` as the coordinator's graph, without the per-profile member
    sets and first sightings that only decisions need (replaying 65 k identifiers allocated
    9.3 MB into an IdentityGraph, 1.9 MB into this, the key strings aside)."""

    def apply(self, identifier: str, profile: str | None) -> None:
        if profile is None:
            self.owner.pop(identifier, None)
        else:
            self.owner[identifier] = profile

    def apply_profile(self, profile: str, first_seen: int | None) -> None:
        pass
