"""Typed settings for every cem process: env prefix `CEM_`, `.env` support, secrets as
SecretStr, unknown keys rejected (a typo in a deployment must fail loudly, not be ignored)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# CEM_* variables read by shell scripts and the test harness, not by the Python settings.
_SCRIPT_ONLY = {"CEM_KAFKA_PORT", "CEM_KAFKA_HOME", "CEM_KAFKA_CONTROLLER_PORT", "CEM_KAFKA_RUN_DIR",
                "CEM_TEST_KAFKA_PORT", "CEM_FUZZ_SEED", "CEM_FUZZ_RUNS", "CEM_FUZZ_SECONDS"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CEM_", env_file=".env", extra="forbid",
                                      frozen=True)

    data_dir: Path = Field(Path("var"), description="Where embedded ClickHouse and run files live.")
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers.")
    clickhouse_dsn: str = Field("", description="chdb:///path (embedded) or http(s)://user:pw@host:port/db; "
                                "empty means chdb:///<data_dir>/clickhouse.")
    topic_partitions: int = Field(4, ge=1, description="Partitions for every cem topic.")
    app_id: str = Field("cem", description="Faust app id and consumer-group prefix.")
    pseudonymization_key: SecretStr = Field(SecretStr("dev-only-change-me"),
                                            description="HMAC key for email/phone hashes.")
    accept_horizon_days: int = Field(400, ge=1, description="Events older than this are rejected.")
    publisher_max_events: int = Field(500, ge=1)
    publisher_max_bytes: int = Field(256 * 1024, ge=1024)
    publisher_linger_ms: int = Field(20, ge=0)
    sink_max_rows: int = Field(100_000, ge=1, description="Rows per ClickHouse insert at most.")
    sink_max_seconds: float = Field(1.0, gt=0, description="Longest a row waits for its insert.")
    sink_insert_threads: int = Field(1, ge=1, le=16, description="Inserts run at once per cut (partitions "
                                     "split between them); raise it for a multi-core ClickHouse server.")
    sink_progress_seconds: float = Field(30.0, gt=0, description="How often `cem sink` logs the rows it landed "
                                         "and its lag.")
    worker_metrics_port: int = Field(0, ge=0, description="Prometheus port of `cem worker` (0 = off).")
    sink_metrics_port: int = Field(0, ge=0, description="Prometheus port of `cem sink` (0 = off).")
    kafka_security_protocol: str = Field("PLAINTEXT", pattern="^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$",
                                         description="Kafka transport: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    kafka_sasl_mechanism: str = Field("SCRAM-SHA-512", pattern="^(PLAIN|SCRAM-SHA-256|SCRAM-SHA-512)$")
    kafka_sasl_username: str = Field("", description="SASL user (with a SASL_* protocol).")
    kafka_sasl_password: SecretStr = Field(SecretStr(""), description="SASL password (secret).")
    kafka_ssl_ca_location: Optional[Path] = Field(None, description="CA bundle that signed the brokers' certificates.")
    clickhouse_ca_cert: Optional[Path] = Field(None, description="CA bundle for an https:// ClickHouse DSN.")
    clickhouse_tls_verify: bool = Field(True, description="Verify the ClickHouse server certificate (https DSNs).")
    fault_injection_dir: Optional[Path] = Field(None, description="Chaos testing only (`cem chaos`): while "
                                                "<dir>/clickhouse_down exists, the sink's inserts fail as in an "
                                                "outage.")
    metrics_host: str = Field("127.0.0.1",
                              description="Bind address of the Prometheus endpoints (0.0.0.0 in containers).")
    sink_query_port: int = Field(8125, ge=0, description="Read-only pack-query endpoint of `cem sink` on "
                                 "127.0.0.1, how `cem query` reads embedded ClickHouse while the sink runs (0 = off).")
    log_level: str = Field("info", pattern="^(crit|error|warn|info|debug)$")
    allowed_lateness_ms: int = Field(10 * 60_000, ge=0, description="Event-time lateness before an event is late.")
    idle_timeout_seconds: float = Field(10.0, gt=0,
                                        description="A quiet partition's watermark follows the wall clock after this.")
    all_quiet_seconds: Optional[float] = Field(
        None, gt=0, description="Event time follows the wall clock only when every raw partition has been quiet "
        "this long (default: CEM_IDLE_TIMEOUT_SECONDS). Raise it above the longest outage you ride out when "
        "replaying old data, so a stall is not taken for the end of traffic.")
    worker_session_timeout_seconds: float = Field(20.0, ge=6, description="Kafka group session timeout of "
                                                  "`cem worker`: how soon a dead worker's partitions move.")
    tick_seconds: float = Field(2.0, gt=0, description="How often the worker ticks quiet partitions.")
    stage_hop: str = Field("marshal", pattern="^(marshal|avro)$", description="How events reach the customer "
                           "stage: `marshal` = only the fields it reads, on the internal topic cem.stage (fast); "
                           "`avro` = it decodes cem.touchpoints again (the former hop). Same on every worker.")
    rules_file: Optional[Path] = Field(None,
                                       description="Negative-moment rules (TOML); default: the shipped catalogue.")
    schema_registry_file: Optional[Path] = Field(
        None, description="Writer schemas of your own producers (`cem schemas register`), read with the "
        "shipped registry by every process at start; default: none.")
    playbooks_file: Optional[Path] = Field(None, description="Recovery playbooks (TOML): the action recommended on "
                                           "every alert; default: the shipped cem/rules/playbooks.toml.")
    identity_shared_devices: list[str] = Field(default_factory=list,
                                               description="Device/terminal ids that never link (JSON list).")
    collector_host: str = Field("127.0.0.1", description="Collector bind address.")
    collector_port: int = Field(8088, ge=0, description="Collector HTTP port.")
    collector_api_keys: dict[str, SecretStr] = Field(
        default_factory=lambda: {"dev": SecretStr("dev-key")},
        description='Source name -> API key, as JSON: {"web-shop": "k1", "pos-eu": "k2"}.')
    privacy_api_key: SecretStr = Field(SecretStr(""), description="Bearer key of the collector's "
                                       "POST /v1/privacy/erase (separate from the event write keys); empty = "
                                       "the endpoint refuses every request.")
    collector_max_body_bytes: int = Field(1024 * 1024, ge=1024)
    collector_max_event_bytes: int = Field(32 * 1024, ge=256)
    collector_max_batch_events: int = Field(500, ge=1)
    webhook_endpoints: dict[str, str] = Field(
        default_factory=dict,
        description='Team -> alert webhook URL, as JSON: {"customer-care": "https://…", "*": "https://…"}.')
    webhook_secret: SecretStr = Field(SecretStr("dev-webhook-secret"),
                                      description="HMAC-SHA256 key of the Cem-Signature header.")
    webhook_max_attempts: int = Field(8, ge=1, description="Attempts before a delivery is parked.")
    webhook_backoff_seconds: float = Field(1.0, gt=0, description="First retry delay (doubles, jittered).")
    webhook_backoff_max_seconds: float = Field(300.0, gt=0, description="Longest retry delay.")
    webhook_timeout_seconds: float = Field(5.0, gt=0, description="HTTP timeout of one attempt.")
    worker_live_customers: int = Field(50_000, ge=0, description="Customer timelines a worker keeps as live objects; "
                                       "the least recently used beyond that are spilled to a scratch file on disk "
                                       "(0 = no bound).")
    worker_live_state_mb: float = Field(100.0, ge=0, description="Megabytes the live customer timelines of a worker "
                                        "may take encoded (as in its changelog; as Python objects they take ~3.5x "
                                        "this); the least recently used beyond that are spilled like those beyond "
                                        "CEM_WORKER_LIVE_CUSTOMERS, so memory holds as histories deepen "
                                        "(0 = no bound).")
    worker_live_identifiers: int = Field(200_000, ge=0, description="Entries of each identity-graph map (identifier "
                                         "-> profile, profile -> members, profile -> first sighting) a worker keeps "
                                         "as live objects, in the coordinator and in every replica; the oldest beyond "
                                         "that are spilled to a scratch file on disk (0 = no bound).")
    worker_gc_full_scan_seconds: float = Field(
        600.0, ge=0, description="Worker GC policy: freeze survivors of each full collection, scan "
        "everything once per this many seconds; 0 = CPython's default collector.")
    worker_heap_trim_seconds: float = Field(
        30.0, ge=0, description="How often a worker hands freed heap back to the operating system "
        "(glibc malloc_trim), so its RSS follows the data it holds rather than its busiest moment; 0 = never.")
    webhook_park_retry_seconds: float = Field(
        300.0, gt=0, description="How often parked deliveries are retried (one probe per endpoint).")
    webhook_park_hours: float = Field(
        72.0, gt=0, description="After this long parked, a delivery expires (ledger and DLQ say so).")
    webhook_ledger_days: float = Field(
        14.0, gt=0, description="How long the delivery ledger keeps an outcome: it must outlive cem.alerts' "
        "retention (Kafka's default 7 days), so an alert replayed from that topic still finds its delivery.")
    notify_metrics_port: int = Field(0, ge=0, description="Prometheus port of `cem notify` (0 = off).")

    @model_validator(mode="after")
    def _ledger_outlives_parking(self) -> "Settings":
        if self.webhook_ledger_days * 24 <= self.webhook_park_hours:
            raise ValueError(f"CEM_WEBHOOK_LEDGER_DAYS ({self.webhook_ledger_days:g}) must be longer than "
                             f"CEM_WEBHOOK_PARK_HOURS ({self.webhook_park_hours:g} h): a parked delivery "
                             "needs its ledger record until it expires")
        return self

    @model_validator(mode="after")
    def _reject_unknown_env(self) -> "Settings":
        known = {f"CEM_{name.upper()}" for name in type(self).model_fields} | _SCRIPT_ONLY
        unknown = sorted(k for k in os.environ if k.startswith("CEM_") and k not in known)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return self

    @property
    def clickhouse(self) -> str:
        return self.clickhouse_dsn or f"chdb://{(self.data_dir / 'clickhouse').resolve()}"


RAW_TOPICS = {ch: f"cem.raw.{ch}" for ch in ("store", "web", "phone", "returns", "feedback", "email")}
TOUCHPOINTS_TOPIC = "cem.touchpoints"
DLQ_TOPIC = "cem.dlq"
#: The customer stage's internal input with CEM_STAGE_HOP=marshal (`cem.schemas.stage`): the
#: fields the stage reads of each touchpoint, keyed by customer, plus its control records.
STAGE_TOPIC = "cem.stage"
#: Events that need the identity coordinator (new identifiers, links between profiles). One
#: partition: the coordinator is the single writer of the identifier graph.
IDENTITY_LINKS_TOPIC = "cem.identity.links"
#: Compacted changelog of the graph (identifier -> profile); every worker replays it.
IDENTITY_MAP_TOPIC = "cem.identity.map"
IDENTITY_MERGES_TOPIC = "cem.identity.merges"
SESSIONS_TOPIC = "cem.sessions"
JOURNEYS_TOPIC = "cem.journeys"
MOMENTS_TOPIC = "cem.moments"
ALERTS_TOPIC = "cem.alerts"
CUSTOMERS_TOPIC = "cem.customers"
#: Compacted ledger of webhook deliveries (delivery id -> outcome): a replay never pages twice.
DELIVERIES_TOPIC = "cem.alerts.deliveries"
#: Compacted ledger of `cem dlq replay` (dead letter's partition:offset -> where it went): a dead
#: letter is re-published once.
DLQ_REPLAYS_TOPIC = "cem.dlq.replays"
#: Erasures decided by the coordinator, after the customer stage dropped their state, for landing
#: to apply to every table (profile ids and salted identifier digests, no identifier). One
#: partition: erasures apply in the order they were decided.
ERASURES_TOPIC = "cem.privacy.erasures"
ALL_TOPICS = (*RAW_TOPICS.values(), TOUCHPOINTS_TOPIC, STAGE_TOPIC, DLQ_TOPIC, IDENTITY_LINKS_TOPIC,
              IDENTITY_MAP_TOPIC, IDENTITY_MERGES_TOPIC, SESSIONS_TOPIC, JOURNEYS_TOPIC, MOMENTS_TOPIC, ALERTS_TOPIC,
              CUSTOMERS_TOPIC, DELIVERIES_TOPIC, DLQ_REPLAYS_TOPIC, ERASURES_TOPIC)


def stage_input(settings: "Settings") -> str | None:
    """The topic the customer stage reads its events and control records from: cem.stage, or
    cem.touchpoints itself with CEM_STAGE_HOP=avro (then None is returned for "no extra topic"
    where a caller only wants the additional one)."""
    return STAGE_TOPIC if settings.stage_hop == "marshal" else None


def stage_topic(settings: "Settings") -> str:
    return stage_input(settings) or TOUCHPOINTS_TOPIC


def state_topic(app_id: str) -> str:
    """The customer stage's compacted state changelog (one per app id, created by the worker)."""
    return f"{app_id}-customer-state"


def merge_state_topic(app_id: str) -> str:
    """The customer stage's compacted changelog of merge bookkeeping (streams/merge_book.py)."""
    return f"{app_id}-customer-merges"


#: Topics whose partition count is fixed regardless of CEM_TOPIC_PARTITIONS.
FIXED_PARTITIONS = {IDENTITY_LINKS_TOPIC: 1, ERASURES_TOPIC: 1}
#: Configs that do not depend on settings; `topic_configs` adds the rest. The merge log is
#: compacted (latest decision per merge id), so an erasure's tombstones remove its records.
TOPIC_CONFIGS = {IDENTITY_MAP_TOPIC: {"cleanup.policy": "compact"},
                 IDENTITY_MERGES_TOPIC: {"cleanup.policy": "compact"},
                 DLQ_REPLAYS_TOPIC: {"cleanup.policy": "compact"}}


def topic_configs(settings: "Settings") -> dict[str, dict[str, str]]:
    """Per-topic configs at creation. The ledger is compacted (latest outcome per delivery) and
    also expires: an outcome older than `webhook_ledger_days` can no longer be asked for (its
    alert is gone from cem.alerts). A parked delivery gets its final outcome ('expired') after
    `webhook_park_hours`, which the settings check is shorter, so its record never ages out
    while it still waits."""
    return {**{t: dict(c) for t, c in TOPIC_CONFIGS.items()},
            DELIVERIES_TOPIC: {"cleanup.policy": "compact,delete",
                               "retention.ms": str(int(settings.webhook_ledger_days * 86_400_000))}}
