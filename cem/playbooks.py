"""Recovery playbooks (pure): the action recommended on an alert, chosen by rule, channel and
customer value, and how an alert escalates when its moment goes unrecovered.

A playbook file (TOML; the shipped `cem/rules/playbooks.toml`, or CEM_PLAYBOOKS_FILE) holds:
- `[bands]`: lifetime spend bands, name = floor in cents. A customer is in the highest band whose
  floor their lifetime spend reaches (the sum of `amount_cents` of every purchase and order in
  their timeline, across identity merges); the lowest floor must be 0.
- `[[playbook]]` entries, tried in order: the first whose `rule`, `channel`, `value` (band) and
  `stage` (lifecycle stage) all match wins. Each is a name or a list of names; omitted or "*"
  matches any. The entry says `action` (a short code: callback, voucher, expedite_refund,
  escalate_store_manager, …), `detail` (what to do, for a person), optionally `within` (how soon,
  a duration), `voucher_cents` and `escalate_to` (the team an unrecovered alert escalates to).
- `[default]`: the action when no playbook matches (action, detail, within).
- `[escalation]`: `team` (where an unrecovered alert goes when its playbook names none) and
  `steps` (how many severity levels it rises, default 1, at most to critical).

`load_playbooks(path)` returns `Playbooks` or raises `PlaybookError` naming the entry and the key
that is wrong; `Playbooks.select` never raises and always returns a recommendation (the default
at worst), so a running worker cannot fail on it. Selection is a function of its inputs only: a
replay recommends the same action.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .lifecycle import STAGES
from .rules import SEVERITIES, RuleError, duration_ms

DEFAULT_PLAYBOOKS = Path(__file__).resolve().parent / "rules" / "playbooks.toml"
_ENTRY_KEYS = frozenset({"name", "rule", "channel", "value", "stage", "action", "detail", "within",
                         "voucher_cents", "escalate_to"})
_ACTION_KEYS = frozenset({"action", "detail", "within", "voucher_cents"})


class PlaybookError(ValueError):
    def __init__(self, where: str, key: str, message: str):
        super().__init__(f"{where}, key '{key}': {message}")
        self.where, self.key = where, key


@dataclass(frozen=True)
class Recommendation:
    """What the alert carries: the action code, what to do, how soon (ms, None = no deadline),
    a voucher amount if any, the playbook that chose it ('default' when none matched), the
    customer's value band and the team an unrecovered alert escalates to (None: the default)."""
    action: str
    detail: str
    within_ms: int | None = None
    voucher_cents: int | None = None
    playbook: str = "default"
    band: str = ""
    escalate_to: str | None = None


@dataclass(frozen=True)
class Playbook:
    name: str
    rules: frozenset[str] | None      # None = any
    channels: frozenset[str] | None
    values: frozenset[str] | None
    stages: frozenset[str] | None
    action: Recommendation

    def matches(self, rule: str, channel: str, band: str, stage: str) -> bool:
        return all(allowed is None or value in allowed for allowed, value in
                   ((self.rules, rule), (self.channels, channel), (self.values, band), (self.stages, stage)))


@dataclass(frozen=True)
class Playbooks:
    bands: tuple[tuple[str, int], ...]   # (name, floor cents), ascending floors, first floor 0
    playbooks: tuple[Playbook, ...]
    default: Recommendation
    escalation_team: str
    escalation_steps: int = 1

    def band(self, spend_cents: int) -> str:
        name = self.bands[0][0]
        for band, floor in self.bands:
            if spend_cents >= floor:
                name = band
        return name

    def select(self, rule: str, channel: str, spend_cents: int, stage: str | None) -> Recommendation:
        band = self.band(max(0, int(spend_cents or 0)))
        for p in self.playbooks:
            if p.matches(rule, channel, band, stage or "new"):
                return _with(p.action, band)
        return _with(self.default, band)

    def escalation(self, severity: str, escalate_to: str | None) -> tuple[str, str]:
        """(team, severity) of an alert whose moment closed unrecovered."""
        i = SEVERITIES.index(severity) if severity in SEVERITIES else 0
        return escalate_to or self.escalation_team, SEVERITIES[min(len(SEVERITIES) - 1, i + self.escalation_steps)]


def _with(r: Recommendation, band: str) -> Recommendation:
    return Recommendation(r.action, r.detail, r.within_ms, r.voucher_cents, r.playbook, band, r.escalate_to)


def _names(spec: Mapping[str, Any], key: str, where: str, known: tuple[str, ...] | None) -> frozenset[str] | None:
    value = spec.get(key, "*")
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        raise PlaybookError(where, key, "a name or a list of names ('*' or omitted matches any)")
    if "*" in items:
        return None
    if known is not None:
        bad = [v for v in items if v not in known]
        if bad:
            raise PlaybookError(where, key, f"{bad[0]!r} is not one of {', '.join(known)}")
    return frozenset(items)


def _action(spec: Mapping[str, Any], where: str, name: str) -> Recommendation:
    action, detail = spec.get("action"), spec.get("detail")
    if not isinstance(action, str) or not action.strip():
        raise PlaybookError(where, "action", "name the action, e.g. action = \"callback\"")
    if not isinstance(detail, str) or not detail.strip():
        raise PlaybookError(where, "detail", "say what to do, e.g. detail = \"Call back within 1 h\"")
    within = None
    if "within" in spec:
        try:
            within = duration_ms(spec["within"], name, "within")
        except RuleError as err:
            raise PlaybookError(where, "within", str(err).split(": ", 1)[-1]) from None
    voucher = spec.get("voucher_cents")
    if voucher is not None and (not isinstance(voucher, int) or isinstance(voucher, bool) or voucher <= 0):
        raise PlaybookError(where, "voucher_cents", "a whole number of cents > 0")
    escalate_to = spec.get("escalate_to")
    if escalate_to is not None and (not isinstance(escalate_to, str) or not escalate_to):
        raise PlaybookError(where, "escalate_to", "a team name")
    return Recommendation(action.strip(), detail.strip(), within, voucher, name, "", escalate_to)


def parse_playbooks(doc: Mapping[str, Any], rule_names: frozenset[str] | None = None,
                    channels: tuple[str, ...] | None = None) -> Playbooks:
    """Playbooks from a parsed TOML document. `rule_names`/`channels`, when given, are the only
    names a playbook may mention (a typo would otherwise never match, silently)."""
    unknown = set(doc) - {"bands", "playbook", "default", "escalation"}
    if unknown:
        raise PlaybookError("file", sorted(unknown)[0], "unknown section; use bands, playbook, default, escalation")
    raw_bands = doc.get("bands", {"none": 0})
    if not isinstance(raw_bands, Mapping) or not raw_bands:
        raise PlaybookError("bands", "bands", "a table of band = floor in cents, e.g. [bands] low = 0")
    for name, floor in raw_bands.items():
        if not isinstance(floor, int) or isinstance(floor, bool) or floor < 0:
            raise PlaybookError("bands", name, "a floor in cents, a whole number ≥ 0")
    bands = tuple(sorted(raw_bands.items(), key=lambda b: b[1]))
    if bands[0][1] != 0:
        raise PlaybookError("bands", bands[0][0], "the lowest band's floor must be 0 (every customer has a band)")
    if len({f for _, f in bands}) != len(bands):
        raise PlaybookError("bands", bands[-1][0], "two bands have the same floor")
    band_names = tuple(b for b, _ in bands)
    default = doc.get("default")
    if not isinstance(default, Mapping):
        raise PlaybookError("default", "default", "add a [default] table with action and detail")
    bad = set(default) - _ACTION_KEYS
    if bad:
        raise PlaybookError("default", sorted(bad)[0], f"unknown key; use {', '.join(sorted(_ACTION_KEYS))}")
    fallback = _action(default, "default", "default")
    esc = doc.get("escalation", {})
    if not isinstance(esc, Mapping):
        raise PlaybookError("escalation", "escalation", "a table with team and steps")
    bad = set(esc) - {"team", "steps"}
    if bad:
        raise PlaybookError("escalation", sorted(bad)[0], "unknown key; use team, steps")
    team = esc.get("team", "cx-escalations")
    if not isinstance(team, str) or not team:
        raise PlaybookError("escalation", "team", "a team name")
    steps = esc.get("steps", 1)
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= 3:
        raise PlaybookError("escalation", "steps", "how many severity levels up: 1, 2 or 3")
    entries = doc.get("playbook", [])
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        raise PlaybookError("playbook", "playbook", "write each playbook as a [[playbook]] table")
    out, names = [], set()
    for i, spec in enumerate(entries):
        name = spec.get("name", f"playbook[{i}]")
        where = f"playbook[{i}]" + (f" '{name}'" if "name" in spec else "")
        if not isinstance(name, str) or not name:
            raise PlaybookError(where, "name", "a non-empty name")
        if name in names:
            raise PlaybookError(where, "name", "defined twice")
        names.add(name)
        bad = set(spec) - _ENTRY_KEYS
        if bad:
            raise PlaybookError(where, sorted(bad)[0], f"unknown key; use {', '.join(sorted(_ENTRY_KEYS))}")
        out.append(Playbook(name, _names(spec, "rule", where, tuple(sorted(rule_names)) if rule_names else None),
                            _names(spec, "channel", where, channels), _names(spec, "value", where, band_names),
                            _names(spec, "stage", where, STAGES), _action(spec, where, name)))
    return Playbooks(bands, tuple(out), fallback, team, steps)


def load_playbooks(path: Path | None = None, rule_names: frozenset[str] | None = None,
                   channels: tuple[str, ...] | None = None) -> Playbooks:
    """The playbooks of a TOML file (default: the shipped one); PlaybookError when it is not
    valid, naming the entry and the key."""
    path = path or DEFAULT_PLAYBOOKS
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise PlaybookError("file", "path", f"cannot read {path}: {err.strerror or err}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise PlaybookError("file", "syntax", f"{path} is not valid UTF-8 TOML: {err}") from None
    return parse_playbooks(doc, rule_names, channels)
