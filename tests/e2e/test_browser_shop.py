"""Issue 7 in a real browser: headless Chromium (Debian's package) opens the demo shop served
by `cem collector --demo-site`, instrumented with the real analytics.js from the npm registry;
the test searches, adds to cart, checks out and clicks Pay rapidly several times, driving the
page over the DevTools protocol. The touchpoints must land in ClickHouse with the browser's
identifiers, and the rapid clicks must raise a rage_click moment."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import urllib.request

import aiohttp
import pytest
from pydantic import SecretStr

from cem.kafka.connection import KafkaConnection
from cem.connectors.trackers import ANALYTICS_JS
from tests.support.ch import clickhouse
from tests.support.pipeline import free_port, start, stop_role, wait_caught_up, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CHROMIUM = shutil.which("chromium")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if not (CHROMIUM and os.path.isfile(os.path.join(REPO, ANALYTICS_JS, "index.js"))) and not os.environ.get("CI"):
    pytest.skip("chromium or analytics.js missing: `make install` (scripts/web-tools.sh) installs both",
                allow_module_level=True)
KEY = "shop-write-key"



class Page:
    """A minimal DevTools-protocol client for one page target."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self._ws, self._id = ws, 0

    async def send(self, method: str, **params):
        self._id += 1
        await self._ws.send_json({"id": self._id, "method": method, "params": params})
        while True:
            msg = await self._ws.receive_json(timeout=60)
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def eval(self, expression: str):
        r = await self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await self.eval(expression)
            if value:
                return value
            await asyncio.sleep(0.2)
        raise TimeoutError(f"page never had {expression}")


async def shop(url: str, debug_port: int) -> str:
    """Browse the shop like a customer; return the anonymous id analytics.js gave them."""
    req = urllib.request.Request(f"http://127.0.0.1:{debug_port}/json/new?about:blank", method="PUT")
    with urllib.request.urlopen(req, timeout=30) as r:
        target = json.loads(r.read())
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            page = Page(ws)
            await page.send("Page.enable")
            await page.send("Page.navigate", url=url)
            anonymous_id = await page.wait_for("window.cemAnonymousId")
            await page.eval("document.getElementById('login').click()")
            for button in ("search", "product", "add", "checkout"):
                await page.eval(f"document.getElementById('{button}').click()")
                await asyncio.sleep(0.3)
            # an impatient customer: Pay, five times within a second
            await page.eval("for (let i = 0; i < 5; i++) document.getElementById('pay').click()")
            await asyncio.sleep(3)  # analytics.js sends each call as it happens
            return anonymous_id


def test_demo_shop_in_headless_chromium_lands_touchpoints_and_a_rage_click(cem_settings, tmp_path):
    assert CHROMIUM, "Debian's chromium is required (scripts/web-tools.sh installs it)"
    cport, dport = free_port(), free_port()
    s = cem_settings.model_copy(update={"collector_port": cport, "collector_api_keys": {"web-shop": SecretStr(KEY)},
                                        "idle_timeout_seconds": 3.0, "tick_seconds": 1.0})
    worker, sink = start("worker", s, "worker"), start("sink", s)
    collector = start("collector", s, "collector", "--demo-site")
    browser = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                                "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}",
                                f"--remote-debugging-port={dport}", "about:blank"],
                               stdout=open(tmp_path / "chromium.log", "wb"), stderr=subprocess.STDOUT, cwd=REPO)
    try:
        def up(port: int, path: str) -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2):
                    return True
            except OSError:
                return False
        wait_until(lambda: up(cport, "/healthz"), 60, 0.5, "the collector", (collector,))
        wait_until(lambda: up(dport, "/json/version"), 60, 0.5, "chromium's DevTools endpoint", (browser,))
        anonymous_id = asyncio.run(shop(f"http://127.0.0.1:{cport}/demo/?key={KEY}", dport))
        wait_until(lambda: _raw_count(s) >= 11, 60, 0.5, "the browser's events on cem.raw.web", (collector,))
        wait_caught_up(s, (worker, sink), timeout=300)
        time.sleep(s.idle_timeout_seconds + 3 * s.tick_seconds)
        wait_caught_up(s, (worker, sink), timeout=120)
    finally:
        browser.terminate()
        browser.wait(30)
        stop_role(collector), stop_role(sink), stop_role(worker)
    with clickhouse(s) as c:
        rows = c.query("SELECT event_type, event_name, identifiers.anonymous_id, identifiers.customer_id, "
                       "identifiers.email_hash, web.element, customer_id FROM touchpoints FINAL "
                       "WHERE source = 'web-shop' ORDER BY occurred_at").result_rows
        types = [r[0] for r in rows]
        assert {"page_view", "identify", "search", "add_to_cart", "checkout_started"} <= set(types), types
        assert all(r[2] == anonymous_id for r in rows)  # the browser's anonymousId on every call
        ident = next(r for r in rows if r[0] == "identify")
        assert ident[3] == "shopper-19" and ident[4] and "@" not in ident[4]  # email hashed at the edge
        pays = [r for r in rows if r[0] == "click" and r[5] == "#pay"]
        assert len(pays) == 5 and all(r[1] == "track:Element Clicked" for r in pays)
        customer = {r[6] for r in rows}
        assert len(customer) == 1  # one customer across anonymous and identified calls
        moments = c.query("SELECT rule, customer_id, length(evidence) FROM negative_moments FINAL "
                          "WHERE rule = 'rage_click'").result_rows
    assert [(m[0], m[1]) for m in moments] == [("rage_click", customer.pop())], moments


def _raw_count(s) -> int:
    from tests.support.pipeline import raw_events
    return len(raw_events(KafkaConnection.from_settings(s), "cem.raw.web"))
