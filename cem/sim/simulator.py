"""A deterministic population of customers producing touchpoints over simulated days, with
ground truth (pure: no I/O; the caller decides where events and truth go).

Personas drive behaviour across all six channels. Negative moments are injected on purpose
and background traffic keeps clear of every single-channel rule (searches find results, clicks
are spaced, checkouts complete, refunds come in time, scores are good). The one cross-channel
sequence (web search → item unavailable in store → call within 24 h) arises from ordinary
behaviour around an injected unavailable item; its truth is labelled afterwards by applying the
rule to each true customer's whole timeline (`_label_sequences`). Each injected moment is
recovered or not by a seeded draw; a recovery is a positive signal (purchase, NPS ≥ 9, CSAT ≥ 4)
inside the rule's window.
Repeat contacts mix channels (a call, a contact form answered by email, a chat, an email, a
service-desk visit) about one order and one topic, none solved on contact; a third contact
sometimes follows within the hour and is evidence of the same moment. Background contacts (calls,
and forms, chats, emails, desk visits solved on contact) name neither an order nor a topic.

Same seed and start → the same events in the same order, byte for byte once serialized.
"""
from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR

PERSONAS = ("happy_regular", "bargain_hunter", "frustrated", "returner", "phone_first",
            "anonymous_then_login", "family_shared_device", "store_only_loyalty")
_WEIGHTS = (30, 15, 12, 10, 10, 12, 5, 6)

#: rule -> recovery window (ms), mirrored by the default rule catalogue.
RECOVERY_WINDOW = {
    "payment_failed": 2 * DAY, "rage_click": 2 * DAY, "zero_result_searches": 2 * DAY,
    "checkout_abandoned": 2 * DAY, "item_unavailable": 3 * DAY, "long_queue": 3 * DAY,
    "long_hold": 3 * DAY, "multiple_transfers": 3 * DAY, "wrong_item_return": 7 * DAY,
    "no_refund": 7 * DAY, "detractor_nps": 14 * DAY, "low_csat": 14 * DAY,
    "repeat_contact": 7 * DAY, "abandoned_call": 3 * DAY, "search_unavailable_call": 7 * DAY,
}
#: The cross-channel sequence rule, mirrored by the default catalogue: a web search, then an item
#: unavailable in store, then a call, within 24 h (the detector's default 1 h cooldown applies).
SEQUENCE = (("web", "search"), ("store", "item_unavailable"), ("phone", "call_started"))
SEQUENCE_WITHIN = DAY
SEQUENCE_COOLDOWN = HOUR


@dataclass
class Customer:
    index: int
    persona: str
    customer_id: str
    anonymous_id: str
    device_id: str
    loyalty_id: str | None
    email_hash: str | None
    phone_hash: str | None
    logged_in: bool = False


@dataclass
class Truth:
    events: list[dict[str, Any]] = field(default_factory=list)   # event_id, customer, session
    moments: list[dict[str, Any]] = field(default_factory=list)  # rule, customer, at, evidence, recovered


@dataclass(frozen=True)
class SimConfig:
    customers: int = 1000
    days: int = 7
    seed: int = 42
    start_ms: int = 1_790_000_000_000
    out_of_order_rate: float = 0.0
    late_rate: float = 0.0
    lateness_ms: int = 10 * MIN


#: Topics of simulated repeat contacts (a customer's two injections never share one within 8 days).
TOPICS = ("delivery", "refund", "damaged_item", "invoice", "order_status")
CONTACT_KINDS = ("call", "form", "chat", "email", "desk")


def is_positive_signal(ev: dict[str, Any]) -> bool:
    """Purchase, order, NPS >= 9, CSAT >= 4, or a contact that ended resolved."""
    t = ev["event_type"]
    if t in ("order_placed", "purchase"):
        return True
    if t == "survey_response":
        f = ev.get("feedback") or {}
        return (f.get("nps") or 0) >= 9 or (f.get("csat") or 0) >= 4
    if t == "call_ended":
        return bool((ev.get("phone") or {}).get("resolved"))
    if t in ("chat_ended", "email_sent", "service_desk_visit"):
        return bool((ev.get("contact") or {}).get("resolved"))
    return False


class Simulator:
    """Iterate `run()` for (emission-ordered) touchpoints; `truth` fills as it goes."""

    def __init__(self, cfg: SimConfig, hasher: Any = None):
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.truth = Truth()
        self._hash = hasher or (lambda kind, v: f"{kind}-{v}")
        self._session_seq = 0
        self._all_events: list[dict[str, Any]] = []
        self._customer_of: dict[str, str] = {}
        self._sessions: dict[tuple[str, str], tuple[str, int]] = {}
        self.population = [self._customer(i) for i in range(cfg.customers)]
        # the family-sharing persona: pairs share one device id (an odd one out keeps its own)
        fam = [c for c in self.population if c.persona == "family_shared_device"]
        for a, b in zip(fam[::2], fam[1::2], strict=False):
            b.device_id = a.device_id

    def _customer(self, i: int) -> Customer:
        persona = self.rng.choices(PERSONAS, _WEIGHTS)[0]
        has_loyalty = persona in ("happy_regular", "store_only_loyalty", "returner") or self.rng.random() < 0.3
        return Customer(
            i, persona, f"cust-{i:06d}", f"anon-{self.rng.getrandbits(48):012x}",
            f"dev-{self.rng.getrandbits(48):012x}",
            f"L{i:08d}" if has_loyalty else None,
            None if persona == "store_only_loyalty" else self._hash("email", f"c{i}@example.com"),
            self._hash("phone", f"+4930{i:07d}") if persona != "anonymous_then_login" or i % 2 else None,
            logged_in=persona not in ("anonymous_then_login",))

    # -- event construction ----------------------------------------------------------------
    def _event(self, c: Customer, channel: str, event_type: str, at: int, ids: dict[str, Any],
               attrs: dict[str, Any] | None = None, store_id: str | None = None,
               session_channel: str | None = None, new_session: bool = False,
               contact: dict[str, Any] | None = None) -> dict[str, Any]:
        ev: dict[str, Any] = {
            "event_id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "event_type": event_type, "channel": channel, "occurred_at": at,
            "received_at": at, "source": f"sim-{channel}", "identifiers": ids,
            "store_id": store_id, "location": None, channel: attrs or {},
        }
        if contact:
            ev["contact"] = contact
        key = (c.customer_id, session_channel or channel)
        if new_session or key not in self._sessions:
            self._session_seq += 1
            self._sessions[key] = (f"s{self._session_seq:08d}", at)
        self._customer_of[ev["event_id"]] = c.customer_id
        self.truth.events.append({"event_id": ev["event_id"], "customer": c.customer_id,
                                  "session": self._sessions[key][0], "channel": channel,
                                  "persona": c.persona, "at": at, "event_type": event_type,
                                  "resolved": bool((attrs or {}).get("resolved") or (contact or {}).get("resolved")),
                                  "store_id": store_id})
        return ev

    def _moment(self, rule: str, c: Customer, at: int, evidence: list[dict], channel: str) -> dict:
        m = {"moment_id": f"m{len(self.truth.moments) + 1:07d}", "rule": rule, "customer": c.customer_id,
             "at": at, "channel": channel, "evidence": [e["event_id"] for e in evidence],
             "recovered": self.rng.random() < 0.5}
        self.truth.moments.append(m)
        return m

    def _web_ids(self, c: Customer) -> dict[str, Any]:
        ids: dict[str, Any] = {"anonymous_id": c.anonymous_id, "device_id": c.device_id}
        if c.logged_in:
            ids["customer_id"] = c.customer_id
        return ids

    def _profile_ids(self, c: Customer) -> dict[str, Any]:
        ids = self._web_ids(c)
        ids["customer_id"] = c.customer_id
        for kind in ("loyalty_id", "email_hash", "phone_hash"):
            if getattr(c, kind):
                ids[kind] = getattr(c, kind)
        return ids

    # -- behaviour per channel ---------------------------------------------------------------
    def _web_session(self, c: Customer, t: int, moment: str | None) -> list[dict]:
        r = self.rng
        ids = self._web_ids(c)
        out = [self._event(c, "web", "page_view", t, ids, {"url": "/"}, new_session=True)]
        t += r.randrange(20, 90) * 1000
        c.__dict__["web_sessions"] = c.__dict__.get("web_sessions", 0) + 1
        if c.persona == "anonymous_then_login" and not c.logged_in and (
                c.__dict__["web_sessions"] >= 2 or r.random() < 0.5):
            c.logged_in = True
            ids = self._web_ids(c)
            out.append(self._event(c, "web", "login", t, self._profile_ids(c), {"url": "/login"}))
            c.__dict__["identified"] = True
            t += r.randrange(20, 60) * 1000
        elif c.logged_in and not c.__dict__.get("identified"):
            # the shop's account sync: one event that carries every id the account knows
            out.append(self._event(c, "web", "identify", t, self._profile_ids(c), {"url": "/account"}))
            c.__dict__["identified"] = True
            t += r.randrange(5, 30) * 1000
        if moment == "zero_result_searches":
            ev = []
            for _ in range(2):
                ev.append(self._event(c, "web", "search", t, ids, {"query": "xqzzt", "results_count": 0}))
                t += r.randrange(15, 60) * 1000
            out += ev
            self._moment(moment, c, ev[-1]["occurred_at"], ev, "web")
        out.append(self._event(c, "web", "search", t, ids, {"query": r.choice(("dress", "shoes", "lamp")),
                                                          "results_count": r.randrange(3, 60)}))
        t += r.randrange(20, 90) * 1000
        if moment == "rage_click":
            ev = []
            for k in range(3):
                ev.append(self._event(c, "web", "click", t + k * 250, ids, {"element": "#pay", "x": 640, "y": 410}))
            out += ev
            self._moment(moment, c, ev[-1]["occurred_at"], ev, "web")
            t += 30_000
        out.append(self._event(c, "web", "click", t, ids, {"element": f"#p{r.randrange(40)}", "x": r.randrange(1280),
                                                         "y": r.randrange(800)}))
        t += r.randrange(20, 90) * 1000
        buys = moment in ("payment_failed", "checkout_abandoned") or r.random() < 0.4
        if buys:
            amount = r.randrange(1000, 20000)
            out.append(self._event(c, "web", "add_to_cart", t, ids, {"product_id": f"sku-{r.randrange(900)}",
                                                                   "amount_cents": amount, "currency": "EUR"}))
            t += r.randrange(20, 90) * 1000
            co = self._event(c, "web", "checkout_started", t, ids, {"amount_cents": amount, "currency": "EUR"})
            out.append(co)
            t += r.randrange(20, 90) * 1000
            if moment == "checkout_abandoned":
                self._moment(moment, c, co["occurred_at"] + 30 * MIN, [co], "web")
                return out
            if moment == "payment_failed":
                pf = self._event(c, "web", "payment_failed", t, ids,
                                 {"amount_cents": amount, "error_code": "card_declined"})
                out.append(pf)
                self._moment(moment, c, pf["occurred_at"], [pf], "web")
                t += r.randrange(30, 120) * 1000
            order = f"ord-{r.getrandbits(40):010x}"
            out.append(self._event(c, "web", "order_placed", t, dict(ids, order_id=order),
                                   {"amount_cents": amount, "currency": "EUR"}))
            c.__dict__.setdefault("orders", []).append(order)
        return out

    def _store_visit(self, c: Customer, t: int, moment: str | None) -> list[dict]:
        r = self.rng
        ids = {"loyalty_id": c.loyalty_id} if c.loyalty_id else {"anonymous_id": f"pos-walkin-{r.getrandbits(40):x}"}
        store = f"store-{c.index % 12:02d}"
        out = [self._event(c, "store", "visit_started", t, ids, {"terminal_id": None}, store, new_session=True)]
        t += r.randrange(2, 15) * MIN
        if moment == "item_unavailable":
            ev = self._event(c, "store", "item_unavailable", t, ids, {"product_id": f"sku-{r.randrange(900)}"}, store)
            out.append(ev)
            self._moment(moment, c, ev["occurred_at"], [ev], "store")
            t += r.randrange(1, 5) * MIN
        wait = r.randrange(660, 1500) if moment == "long_queue" else r.randrange(30, 400)
        q = self._event(c, "store", "queue_wait", t, ids, {"wait_seconds": wait}, store)
        out.append(q)
        if moment == "long_queue":
            self._moment(moment, c, q["occurred_at"], [q], "store")
        t += wait * 1000
        if moment != "item_unavailable" or r.random() < 0.5:
            receipt = dict(ids, email_hash=c.email_hash) if c.email_hash else ids  # e-receipt
            out.append(self._event(c, "store", "purchase", t, receipt, {"amount_cents": r.randrange(500, 9000),
                                                                  "currency": "EUR", "items": r.randrange(1, 5),
                                                                  "terminal_id": f"pos-{r.randrange(6)}"}, store))
            t += r.randrange(1, 4) * MIN
        out.append(self._event(c, "store", "visit_ended", t, ids, {}, store))
        return out

    def _call(self, c: Customer, t: int, moment: str | None, order: str | None = None,
              topic: str | None = None) -> list[dict]:
        r = self.rng
        # the contact centre's CRM lookup attaches the account to the caller's number
        ids: dict[str, Any] = {"customer_id": c.customer_id}
        if c.phone_hash:
            ids["phone_hash"] = c.phone_hash
        if order:
            ids["order_id"] = order
        call = f"call-{r.getrandbits(40):x}"
        out = [self._event(c, "phone", "call_started", t, ids, {"call_id": call}, new_session=True,
                           contact={"topic": topic} if topic else None)]
        t += r.randrange(20, 60) * 1000
        out.append(self._event(c, "phone", "ivr_step", t, ids, {"call_id": call, "ivr_step": "orders"}))
        t += r.randrange(10, 40) * 1000
        if moment == "abandoned_call":  # hung up in the queue
            end = self._event(c, "phone", "call_ended", t + r.randrange(60, 600) * 1000, ids,
                              {"call_id": call, "reason": "abandoned", "resolved": False,
                               "duration_seconds": r.randrange(60, 600)})
            self._moment(moment, c, end["occurred_at"], [end], "phone")
            return out + [end]
        hold = r.randrange(330, 900) if moment == "long_hold" else r.randrange(10, 200)
        h = self._event(c, "phone", "hold", t, ids, {"call_id": call, "hold_seconds": hold})
        out.append(h)
        if moment == "long_hold":
            self._moment(moment, c, h["occurred_at"], [h], "phone")
        t += hold * 1000
        if moment == "multiple_transfers":
            ev = []
            for _ in range(2):
                ev.append(self._event(c, "phone", "transfer", t, ids, {"call_id": call, "queue": "billing"}))
                t += r.randrange(30, 120) * 1000
            out += ev
            self._moment(moment, c, ev[-1]["occurred_at"], ev, "phone")
        out.append(self._event(c, "phone", "call_ended", t, ids, {"call_id": call, "reason": "order_status",
                                                                "resolved": moment is None and topic is None,
                                                                "duration_seconds": r.randrange(120, 900)}))
        return out

    def _contact(self, c: Customer, kind: str, t: int, order: str | None, topic: str | None,
                 resolved: bool = False) -> list[dict]:
        """One customer-service contact (the first event opens it) about `order`, if any, solved
        by its closing event when `resolved`."""
        if kind == "call":
            return self._call(c, t, None, order, topic or "order_status")
        r = self.rng
        case = f"case-{r.getrandbits(40):x}"
        ids: dict[str, Any] = {"customer_id": c.customer_id}
        if order:
            ids["order_id"] = order
        about = {"topic": topic, "case_id": case} if topic else {"case_id": case}
        sc = f"case:{case}"
        if kind == "desk":
            if c.loyalty_id:
                ids["loyalty_id"] = c.loyalty_id
            return [self._event(c, "store", "service_desk_visit", t, ids, {}, f"store-{c.index % 12:02d}",
                                session_channel=sc, new_session=True, contact={**about, "resolved": resolved})]
        if kind == "chat":
            ids["anonymous_id"] = c.anonymous_id  # the chat widget runs in the customer's signed-in session
            return [self._event(c, "web", "chat_started", t, ids, {}, session_channel=sc, new_session=True,
                                contact=about),
                    self._event(c, "web", "chat_ended", t + r.randrange(3, 20) * MIN, ids, {}, session_channel=sc,
                                contact={"case_id": case, "resolved": resolved})]
        if c.email_hash:
            ids["email_hash"] = c.email_hash
        thread = f"thread-{case}"
        if kind == "form":
            first = self._event(c, "web", "contact_form_submitted", t, {**ids, "anonymous_id": c.anonymous_id}, {},
                                session_channel=sc, new_session=True, contact=about)
        else:
            first = self._event(c, "email", "email_received", t, ids, {"thread_id": thread, "mailbox": "service"},
                                session_channel=sc, new_session=True, contact=about)
        # service answers by email without solving it: in the email's thread (one session), or
        # opening one for the form (a session of its own: another channel)
        reply = self._event(c, "email", "email_sent", t + r.randrange(30, 300) * MIN, ids,
                            {"thread_id": thread, "mailbox": "service"},
                            session_channel=sc if kind == "email" else f"{sc}:reply",
                            new_session=kind == "form", contact={"case_id": case, "resolved": resolved})
        return [first, reply]

    def _repeat_contact(self, c: Customer, t: int) -> list[dict]:
        """Two (sometimes three) contacts on any mix of channels about one order: one moment."""
        r = self.rng
        order = f"ord-{r.getrandbits(40):010x}"
        used: dict[str, int] = c.__dict__.setdefault("topics", {})
        free = [x for x in TOPICS if t - used.get(x, -(1 << 62)) > 8 * DAY]
        topic = r.choice(free) if free else None
        first = self._contact(c, r.choice(CONTACT_KINDS), t, order, topic)
        second = self._contact(c, r.choice(CONTACT_KINDS), t + r.randrange(1, 5) * DAY, order, topic)
        out, evidence = first + second, [first[0], second[0]]
        if r.random() < 0.3:  # still waiting: a third contact within the hour joins the moment
            third = self._contact(c, r.choice(CONTACT_KINDS), second[0]["occurred_at"] + r.randrange(5, 50) * MIN,
                                  order, topic)
            out, evidence = out + third, evidence + [third[0]]
        if topic:  # the topic is free again 8 days after this injection's last contact
            used[topic] = max(e["occurred_at"] for e in out)
        self._moment("repeat_contact", c, second[0]["occurred_at"], evidence, second[0]["channel"])
        return out

    def _return(self, c: Customer, t: int, moment: str | None) -> list[dict]:
        r = self.rng
        order = (c.__dict__.get("orders") or [f"ord-{r.getrandbits(40):010x}"])[-1]
        ids: dict[str, Any] = {"order_id": order}
        if c.email_hash:
            ids["email_hash"] = c.email_hash
        else:
            ids["customer_id"] = c.customer_id
        rma = f"rma-{r.getrandbits(32):x}"
        reason = "wrong_item" if moment == "wrong_item_return" else r.choice(("size", "changed_mind"))
        req = self._event(c, "returns", "return_requested", t, ids, {"rma_id": rma, "reason": reason}, new_session=True)
        out = [req]
        if moment == "wrong_item_return":
            self._moment(moment, c, req["occurred_at"], [req], "returns")
        t += r.randrange(1, 3) * DAY
        rec = self._event(c, "returns", "return_received", t, ids, {"rma_id": rma, "reason": reason})
        out.append(rec)
        if moment == "no_refund":
            self._moment(moment, c, rec["occurred_at"] + 5 * DAY, [rec], "returns")
            return out
        t += r.randrange(4, 40) * HOUR
        out.append(self._event(c, "returns", "refund_issued", t, ids,
                               {"rma_id": rma, "amount_cents": r.randrange(1000, 9000), "currency": "EUR"}))
        return out

    def _survey(self, c: Customer, t: int, moment: str | None) -> list[dict]:
        r = self.rng
        # the survey tool sends to the account: it knows the customer id and the address
        ids = {"customer_id": c.customer_id}
        if c.email_hash:
            ids["email_hash"] = c.email_hash
        elif c.loyalty_id:
            ids["loyalty_id"] = c.loyalty_id
        nps = r.randrange(0, 7) if moment == "detractor_nps" else r.randrange(7, 11)
        csat = r.randrange(1, 3) if moment == "low_csat" else r.randrange(3, 6)
        ev = self._event(c, "feedback", "survey_response", t, ids, {"survey_id": "post-purchase", "nps": nps,
                                                                   "csat": csat, "comment": ""}, new_session=True)
        if moment in ("detractor_nps", "low_csat"):
            self._moment(moment, c, ev["occurred_at"], [ev], "feedback")
        return [ev]

    # -- days ----------------------------------------------------------------------------------
    def _day(self, c: Customer, day_start: int) -> list[dict]:
        r = self.rng
        p = c.persona
        out: list[dict] = []
        t = day_start + r.randrange(8 * HOUR, 12 * HOUR)
        web_p = {"store_only_loyalty": 0.0, "phone_first": 0.2}.get(p, 0.6)
        if r.random() < web_p:
            moment = None
            if p in ("frustrated", "bargain_hunter") and r.random() < 0.35:
                moment = r.choice(("payment_failed", "rage_click", "zero_result_searches", "checkout_abandoned"))
            out += self._web_session(c, t, moment)
            t += 3 * HOUR
        if c.loyalty_id and r.random() < (0.5 if p == "store_only_loyalty" else 0.2):
            moment = r.choice(("item_unavailable", "long_queue")) if p in ("frustrated", "store_only_loyalty") \
                and r.random() < 0.3 else None
            out += self._store_visit(c, t, moment)
            t += 2 * HOUR
        if p in ("phone_first", "frustrated") and r.random() < 0.3:
            moment = r.choice(("long_hold", "multiple_transfers", "repeat_contact", "abandoned_call")) \
                if r.random() < 0.4 else None
            if moment == "repeat_contact":
                out += self._repeat_contact(c, t)
            elif moment is None and r.random() < 0.3:  # a contact on another channel, solved
                out += self._contact(c, r.choice(CONTACT_KINDS[1:]), t, None, None, resolved=True)
            else:
                out += self._call(c, t, moment)
            t += 2 * HOUR
        if p == "returner" and r.random() < 0.25:
            out += self._return(c, t, r.choice(("wrong_item_return", "no_refund", None)))
            t += HOUR
        if out and r.random() < 0.15:
            moment = r.choice(("detractor_nps", "low_csat")) if p == "frustrated" and r.random() < 0.5 else None
            out += self._survey(c, t, moment)
        return out

    def _recover(self, events: list[dict]) -> list[dict]:
        """Emit the positive signal for each recovered moment (a purchase or a top score)."""
        extra = []
        for m in self.truth.moments:
            if m.get("_done") or not m["recovered"]:
                m["_done"] = True
                continue
            m["_done"] = True
            c = self.population[int(m["customer"].split("-")[1])]
            at = m["at"] + self.rng.randrange(HOUR, RECOVERY_WINDOW[m["rule"]] // 2)
            ids = {"customer_id": c.customer_id}
            if c.email_hash:
                ids["email_hash"] = c.email_hash
            extra += [self._event(c, "feedback", "survey_response", at, ids,
                                  {"survey_id": "recovery", "nps": 10, "csat": 5, "comment": "sorted, thanks"},
                                  new_session=True)]
        return extra

    def run(self) -> Iterator[dict[str, Any]]:
        cfg = self.cfg
        r = self.rng
        pending: list[tuple[int, int, dict]] = []
        seq = 0
        for day in range(cfg.days):
            day_start = cfg.start_ms + day * DAY
            todays: list[dict] = []
            for c in self.population:
                todays += self._day(c, day_start)
            todays += self._recover(todays)
            end = cfg.start_ms + cfg.days * DAY
            for ev in todays:
                if ev["occurred_at"] >= end:
                    continue  # the simulated period is over: later follow-ups never happen
                delay = 0
                x = r.random()
                if x < cfg.late_rate:
                    delay = cfg.lateness_ms + r.randrange(MIN, 60 * MIN)
                elif x < cfg.late_rate + cfg.out_of_order_rate:
                    delay = r.randrange(1, cfg.lateness_ms // 2)
                ev["received_at"] = ev["occurred_at"] + delay
                seq += 1
                pending.append((ev["received_at"], seq, ev))
                self._all_events.append(ev)
            pending.sort(key=lambda x: (x[0], x[1]))
            horizon = day_start + DAY
            ready = [p for p in pending if p[0] < horizon]
            pending = [p for p in pending if p[0] >= horizon]
            for _, _, ev in ready:
                yield ev
        pending.sort(key=lambda x: (x[0], x[1]))
        for _, _, ev in pending:
            yield ev
        for m in self.truth.moments:
            m.pop("_done", None)
        self._label_sequences()
        self._trim_to_period()
        self._settle_contacts()
        self._settle_recovery()

    def _label_sequences(self) -> None:
        """Truth for the sequence rule: its definition applied to each true customer's whole
        timeline (earliest chain, every step later than the one before, all within 24 h; a 1 h
        cooldown between moments), as the detector sees it once every event has arrived."""
        steps: dict[str, list[tuple[int, str, int]]] = {}
        for ev in self._all_events:
            for i, (channel, etype) in enumerate(SEQUENCE):
                if ev["channel"] == channel and ev["event_type"] == etype:
                    steps.setdefault(self._customer_of[ev["event_id"]], []).append(
                        (ev["occurred_at"], ev["event_id"], i))
        for customer, seen in sorted(steps.items()):
            seen.sort()
            chain: list[tuple[int, str, int]] = []
            last_fired: int | None = None
            for e in seen:
                in_order = not chain or (e[0] >= chain[-1][0] and e[0] - chain[0][0] <= SEQUENCE_WITHIN)
                if e[2] == len(chain) and in_order:
                    chain.append(e)
                    if len(chain) == len(SEQUENCE):
                        if last_fired is None or chain[-1][0] - last_fired >= SEQUENCE_COOLDOWN:
                            last_fired = chain[-1][0]
                            self.truth.moments.append({
                                "moment_id": f"m{len(self.truth.moments) + 1:07d}", "rule": "search_unavailable_call",
                                "customer": customer, "at": chain[-1][0], "channel": "phone",
                                "evidence": [x[1] for x in chain], "recovered": False})
                        chain = []
                elif e[2] == 0:
                    chain = [e]

    def _trim_to_period(self) -> None:
        """Keep truth only for what happened inside the simulated period."""
        emitted = {ev["event_id"] for ev in self._all_events}
        end = self.cfg.start_ms + self.cfg.days * DAY
        self.truth.events = [t for t in self.truth.events if t["event_id"] in emitted]
        self.truth.moments = [m for m in self.truth.moments
                              if m["at"] < end and all(e in emitted for e in m["evidence"])]

    def _settle_contacts(self) -> None:
        """A repeat-contact moment's third contact is its evidence only while the moment is still
        open: a positive signal of the customer in between (a purchase, a contact solved on
        another channel) recovered it first, and the third contact, inside the rule's 1 h
        cooldown, then raises nothing."""
        at_of = {ev["event_id"]: ev["occurred_at"] for ev in self._all_events}
        signals: dict[str, list[int]] = {}
        for ev in self._all_events:
            if is_positive_signal(ev):
                signals.setdefault(self._customer_of[ev["event_id"]], []).append(ev["occurred_at"])
        for m in self.truth.moments:
            if m["rule"] == "repeat_contact" and len(m["evidence"]) > 2:
                third = at_of[m["evidence"][2]]
                if any(m["at"] < s < third for s in signals.get(m["customer"], ())):
                    m["evidence"] = m["evidence"][:2]

    def _settle_recovery(self) -> None:
        """A moment is recovered iff its true customer gave a positive signal inside the rule's
        window after it (whether injected on purpose or part of normal behaviour)."""
        signals: dict[str, list[int]] = {}
        for ev in self._all_events:
            if is_positive_signal(ev):
                signals.setdefault(self._customer_of[ev["event_id"]], []).append(ev["occurred_at"])
        end = self.cfg.start_ms + self.cfg.days * DAY
        for m in self.truth.moments:
            window = RECOVERY_WINDOW[m["rule"]]
            m["recovered"] = any(m["at"] < t <= m["at"] + window for t in signals.get(m["customer"], ()))
            m["status"] = "recovered" if m["recovered"] else (
                "unrecovered" if m["at"] + window <= end else "open")
