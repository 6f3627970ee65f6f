"""Registering a producer's writer schema (CEM_SCHEMA_REGISTRY_FILE, `cem schemas register`)."""
import copy
import json

import pytest

from cem.schemas.registry import SCHEMA_DIR, SITE_IDS, RegistrationError, SchemaRegistry, register
from cem.schemas.serde import DecodeError, decode_record, encode_single

SHIPPED = SchemaRegistry.from_dir()
LATEST = SHIPPED.latest("touchpoint")
NEW_ID = SITE_IDS + 100  # far from ids a future shipped version takes


def writer_schema(tmp_path, name="producer.avsc", extra_field=None):
    raw = copy.deepcopy(LATEST.raw)
    raw["fields"].append(extra_field or {"name": "tenant", "type": "string"})  # the reader skips it
    path = tmp_path / name
    path.write_text(json.dumps(raw))
    return path, raw


def event(tenant="acme") -> dict:
    return {"event_id": "e-1", "event_type": "page_view", "channel": "web", "occurred_at": 1_790_000_000_000,
            "received_at": 1_790_000_000_500, "source": "shop",
            "identifiers": {"anonymous_id": "anon-1"}, "web": {"url": "https://shop.example/"}, "tenant": tenant}


def test_a_registered_writer_schema_decodes_to_the_pipeline_schema(tmp_path):
    avsc, raw = writer_schema(tmp_path)
    extra = tmp_path / "site" / "registry.json"
    import fastavro
    wire = encode_single(event(), NEW_ID, fastavro.parse_schema(raw))
    with pytest.raises(DecodeError) as err:
        decode_record(wire, SHIPPED, LATEST.parsed)
    assert err.value.reason == "unknown_schema_id"

    entry, added = register(extra, avsc, "touchpoint", NEW_ID)
    assert added and entry.id == NEW_ID and entry.version == max(s.version for s in SHIPPED.by_id.values()) + 1
    reg = SchemaRegistry.from_dir(SCHEMA_DIR, extra)
    assert reg.latest("touchpoint").id == LATEST.id  # the pipeline keeps its own schema
    decoded = decode_record(wire, reg, reg.latest("touchpoint").parsed).events[0]
    assert decoded["event_id"] == "e-1" and "tenant" not in decoded
    # the schema file sits next to the registry file, named in it
    index = json.loads(extra.read_text())
    assert (extra.parent / index["schemas"][str(NEW_ID)]["file"]).exists()


def test_registering_again_is_idempotent_and_ids_never_change_meaning(tmp_path):
    avsc, _ = writer_schema(tmp_path)
    extra = tmp_path / "registry.json"
    first, added = register(extra, avsc, schema_id=NEW_ID)
    again, added_again = register(extra, avsc, schema_id=NEW_ID)
    assert added and not added_again and again.id == first.id
    other, _ = writer_schema(tmp_path, "other.avsc", {"name": "region", "type": "string"})
    with pytest.raises(RegistrationError, match=f"schema id {NEW_ID} is already registered"):
        register(extra, other, schema_id=NEW_ID)
    with pytest.raises(RegistrationError, match=f"schema id {LATEST.id} is already registered"):
        register(extra, other, schema_id=LATEST.id)
    nxt, _ = register(extra, other)  # default: the next free id
    assert nxt.id == NEW_ID + 1
    fresh, _ = register(tmp_path / "fresh" / "registry.json", other)
    assert fresh.id == SITE_IDS  # clear of the ids cem's own releases take


def test_a_schema_the_pipeline_cannot_read_is_refused(tmp_path):
    raw = copy.deepcopy(LATEST.raw)
    raw["fields"] = [f for f in raw["fields"] if f["name"] != "event_id"]  # the reader needs it, no default
    bad = tmp_path / "bad.avsc"
    bad.write_text(json.dumps(raw))
    with pytest.raises(RegistrationError, match="cannot read data written with bad.avsc"):
        register(tmp_path / "registry.json", bad)
    garbage = tmp_path / "garbage.avsc"
    garbage.write_text("{not json")
    with pytest.raises(RegistrationError, match="is not an Avro schema"):
        register(tmp_path / "registry.json", garbage)
    avsc, _ = writer_schema(tmp_path)
    with pytest.raises(RegistrationError, match="unknown subject"):
        register(tmp_path / "registry.json", avsc, subject="orders")
    assert not (tmp_path / "registry.json").exists()


def test_an_extra_registry_may_not_redefine_a_shipped_id(tmp_path):
    extra = tmp_path / "registry.json"
    (tmp_path / "x.avsc").write_text(json.dumps(LATEST.raw))
    entry = {"subject": "touchpoint", "version": 9, "file": "x.avsc"}
    extra.write_text(json.dumps({"schemas": {str(LATEST.id): entry}}))
    with pytest.raises(ValueError, match="already shipped"):
        SchemaRegistry.from_dir(SCHEMA_DIR, extra)
