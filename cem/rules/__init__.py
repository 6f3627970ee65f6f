"""The negative-moment rule catalogue (pure): TOML → typed, validated rules.

`load_rules(path)` returns the rules or raises `RuleError` naming the rule and the field that
is wrong, so a broken catalogue never reaches a running worker.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

DEFAULT_RULES = Path(__file__).resolve().parent / "default.toml"
KINDS = ("single", "count", "sequence", "absence")
SEVERITIES = ("low", "medium", "high", "critical")
def _ordered(cmp):
    """A comparison that is False, never TypeError, when the event's value cannot be ordered
    against the rule's (a string attribute compared with a number): a worker never crashes on
    an attribute of the wrong type, the rule just does not match."""
    def op(a, b):
        try:
            return a is not None and cmp(a, b)
        except TypeError:
            return False
    return op


def _member(a, b):
    try:
        return a in b
    except TypeError:  # an unhashable attribute value against a set-like list
        return False


OPS = {"eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "lt": _ordered(lambda a, b: a < b),
       "le": _ordered(lambda a, b: a <= b), "gt": _ordered(lambda a, b: a > b),
       "ge": _ordered(lambda a, b: a >= b), "in": _member}
_SCALAR = (str, int, float, bool)

#: `contact` groups a customer-service contact by the order it is about and by its topic: two
#: contacts share a group when they name the same order or the same topic.
GROUPS = ("subject", "element", "call_id", "order_id", "rma_id", "customer", "contact")
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class RuleError(ValueError):
    def __init__(self, rule: str, field_: str, message: str):
        super().__init__(f"rule '{rule}', field '{field_}': {message}")
        self.rule, self.field = rule, field_


def duration_ms(value: Any, rule: str, name: str) -> int:
    m = _DURATION.match(str(value).strip()) if isinstance(value, str) else None
    if not m:
        raise RuleError(rule, name, f"{value!r} is not a duration like '1s', '30m', '24h', '5d'")
    return int(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True)
class Match:
    event_types: frozenset[str]
    channel: str | None = None
    where: tuple[tuple[str, str, Any], ...] = ()

    def __call__(self, event_type: str, channel: str, attrs: Mapping[str, Any]) -> bool:
        if event_type not in self.event_types or (self.channel and channel != self.channel):
            return False
        return all(OPS[op](attrs.get(f), v) for f, op, v in self.where)


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str
    severity: str
    team: str
    recovery_ms: int
    cooldown_ms: int
    match: Match | None = None
    threshold: int = 1
    window_ms: int = 0
    group_by: str = "customer"
    steps: tuple[Match, ...] = ()
    trigger: Match | None = None
    expected: Match | None = None
    correlate: str | None = None
    within_ms: int = 0
    #: count rules: a further matching event of a group whose moment is still open (within the
    #: window of it) joins that moment as evidence instead of counting towards a new one
    extend: bool = False


def _match(spec: Any, rule: str, name: str) -> Match:
    if not isinstance(spec, dict):
        raise RuleError(rule, name, "must be a table like { event_type = \"click\" }")
    unknown = set(spec) - {"event_type", "channel", "where"}
    if unknown:
        raise RuleError(rule, f"{name}.{sorted(unknown)[0]}", "unknown key; use event_type, channel, where")
    et = spec.get("event_type")
    types = [et] if isinstance(et, str) else et
    if not types or not all(isinstance(t, str) for t in types):
        raise RuleError(rule, f"{name}.event_type", "give an event type or a list of them")
    channel = spec.get("channel")
    if channel is not None and not isinstance(channel, str):
        raise RuleError(rule, f"{name}.channel", "a channel name such as \"web\"")
    conditions = spec.get("where", {})
    if not isinstance(conditions, dict):
        raise RuleError(rule, f"{name}.where", "a table like { amount = { gt = 100 } }")
    where = []
    for f, cond in conditions.items():
        for op, v in (cond.items() if isinstance(cond, dict) else [("eq", cond)]):
            where.append((f, op, _operand(v, op, rule, f"{name}.where.{f}")))
    return Match(frozenset(types), channel, tuple(where))


def _operand(value: Any, op: str, rule: str, name: str) -> Any:
    """The checked right-hand side of one `where` condition: `in` takes a list of scalars, every
    other operator one scalar (string, number, boolean)."""
    if op not in OPS:
        raise RuleError(rule, name, f"unknown operator '{op}'; use {', '.join(OPS)}")
    if op == "in":
        if not isinstance(value, list) or not all(isinstance(v, _SCALAR) for v in value):
            raise RuleError(rule, name, "'in' takes a list of values, e.g. in = [\"a\", \"b\"]")
        return tuple(value)
    if not isinstance(value, _SCALAR):
        raise RuleError(rule, name, f"'{op}' compares with one string, number or boolean, not {value!r}")
    return value


def parse_rule(spec: Mapping[str, Any]) -> Rule:
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise RuleError("?", "name", "every rule needs a name")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise RuleError(name, "kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    severity = spec.get("severity", "medium")
    if severity not in SEVERITIES:
        raise RuleError(name, "severity", f"{severity!r} is not one of {', '.join(SEVERITIES)}")
    team = spec.get("team")
    if not isinstance(team, str) or not team:
        raise RuleError(name, "team", "name the owner team that receives the alert")
    recovery = duration_ms(spec.get("recovery", "7d"), name, "recovery")
    cooldown = duration_ms(spec.get("cooldown", "1h"), name, "cooldown")
    common = dict(name=name, kind=kind, severity=severity, team=team, recovery_ms=recovery, cooldown_ms=cooldown)
    if kind == "single":
        return Rule(**common, match=_match(spec.get("match"), name, "match"))
    if kind == "count":
        group = spec.get("group_by", "customer")
        if group not in GROUPS:
            raise RuleError(name, "group_by", f"{group!r} is not one of {', '.join(GROUPS)}")
        threshold = spec.get("threshold")
        if not isinstance(threshold, int) or threshold < 2:
            raise RuleError(name, "threshold", "a whole number ≥ 2")
        extend = spec.get("extend", False)
        if not isinstance(extend, bool):
            raise RuleError(name, "extend", "true or false")
        return Rule(**common, match=_match(spec.get("match"), name, "match"), threshold=threshold,
                    window_ms=duration_ms(spec.get("window"), name, "window"), group_by=group, extend=extend)
    if kind == "sequence":
        steps = spec.get("steps")
        if not isinstance(steps, list) or len(steps) < 2:
            raise RuleError(name, "steps", "a list of at least two matches")
        return Rule(**common, steps=tuple(_match(s, name, f"steps[{i}]") for i, s in enumerate(steps)),
                    within_ms=duration_ms(spec.get("within"), name, "within"))
    correlate = spec.get("correlate")
    if correlate is not None and not isinstance(correlate, str):
        raise RuleError(name, "correlate", "an attribute name such as rma_id")
    return Rule(**common, trigger=_match(spec.get("trigger"), name, "trigger"),
                expected=_match(spec.get("expected"), name, "expected"), correlate=correlate,
                within_ms=duration_ms(spec.get("within"), name, "within"))


def event_types(rule: Rule) -> frozenset[str]:
    """Every event type that can change the rule's state (match, steps, trigger, expected)."""
    matches = [rule.match, rule.trigger, rule.expected, *rule.steps]
    return frozenset(t for m in matches if m is not None for t in m.event_types)


def by_event_type(rules: Iterable[Rule]) -> dict[str, tuple[Rule, ...]]:
    """Rules indexed by the event types they look at, in catalog order: a touch is offered
    only to the rules that could fire on it."""
    index: dict[str, list[Rule]] = {}
    for rule in rules:
        for t in event_types(rule):
            index.setdefault(t, []).append(rule)
    return {t: tuple(rs) for t, rs in index.items()}


def _read(path: Path, section: str) -> list[Mapping[str, Any]]:
    """The `[[section]]` tables of a rules file; RuleError (never another exception) when the
    file is not UTF-8 TOML or the section is not a list of tables."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise RuleError("?", "file", f"{path} is not valid UTF-8 TOML: {err}") from None
    items = doc.get(section, [])
    if not isinstance(items, list) or not all(isinstance(r, Mapping) for r in items):
        raise RuleError("?", section, f"write each {section} as a [[{section}]] table")
    return items


def load_rules(path: Path | None = None) -> tuple[Rule, ...]:
    path = path or DEFAULT_RULES
    rules = tuple(parse_rule(r) for r in _read(path, "rule"))
    names = [r.name for r in rules]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise RuleError(sorted(dup)[0], "name", "defined twice")
    return rules


#: Every alert goes to cem.alerts and ClickHouse; a webhook goes out when the team has an
#: endpoint configured (CEM_WEBHOOK_ENDPOINTS). A route may narrow this list.
DEFAULT_DELIVERY = ("topic", "clickhouse", "webhook")
DELIVERIES = frozenset(DEFAULT_DELIVERY)


@dataclass(frozen=True)
class Route:
    """Routing-table entry: which team gets a rule's alerts for a channel/store ('*' = any)."""
    rule: str = "*"
    channel: str = "*"
    store: str = "*"
    team: str | None = None
    severity: str | None = None
    delivery: tuple[str, ...] = DEFAULT_DELIVERY

    def matches(self, rule: str, channel: str, store: str | None) -> bool:
        return (self.rule in ("*", rule) and self.channel in ("*", channel)
                and self.store in ("*", store or ""))


def load_routes(path: Path | None = None) -> tuple[Route, ...]:
    """The `[[route]]` tables, checked: RuleError naming the route and the key that is wrong."""
    routes = []
    for i, r in enumerate(_read(path or DEFAULT_RULES, "route")):
        where = f"route[{i}]"
        unknown = set(r) - {"rule", "channel", "store", "team", "severity", "delivery"}
        if unknown:
            raise RuleError(where, sorted(unknown)[0],
                            "unknown key; use rule, channel, store, team, severity, delivery")
        for key in ("rule", "channel", "store", "team"):
            if not isinstance(r.get(key, "*"), str) or not r.get(key, "*"):
                raise RuleError(where, key, "a non-empty string ('*' matches any)" if key != "team" else "a team name")
        severity = r.get("severity")
        if severity is not None and severity not in SEVERITIES:
            raise RuleError(where, "severity", f"{severity!r} is not one of {', '.join(SEVERITIES)}")
        delivery = r.get("delivery", list(DEFAULT_DELIVERY))
        if not isinstance(delivery, list) or not all(isinstance(d, str) for d in delivery):
            raise RuleError(where, "delivery", f"a list drawn from {', '.join(DEFAULT_DELIVERY)}")
        bad = set(delivery) - DELIVERIES
        if bad:
            raise RuleError(where, "delivery",
                            f"unknown delivery {sorted(bad)[0]!r}; use {', '.join(DEFAULT_DELIVERY)}")
        routes.append(Route(r.get("rule", "*"), r.get("channel", "*"), r.get("store", "*"), r.get("team"),
                            severity, tuple(delivery)))
    return tuple(routes)


def route(rule: Rule, channel: str, store: str | None, routes: Iterable[Route]) -> tuple[str, str, tuple[str, ...]]:
    """(team, severity, deliveries) for an alert: the first matching route, else the rule's own."""
    for r in routes:
        if r.matches(rule.name, channel, store):
            return r.team or rule.team, r.severity or rule.severity, r.delivery
    return rule.team, rule.severity, DEFAULT_DELIVERY
