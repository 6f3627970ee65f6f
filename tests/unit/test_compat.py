import copy
import json

from cem.schemas.compat import check_all, check_backward
from cem.schemas.registry import SCHEMA_DIR

RELEASED = json.loads((SCHEMA_DIR / "history" / "touchpoint-v1.avsc").read_text())


def test_shipped_schemas_are_backward_compatible():
    reports = check_all()
    assert reports and all(r.compatible for r in reports), reports


def test_new_optional_field_is_compatible():
    new = copy.deepcopy(RELEASED)
    new["fields"].append({"name": "consent", "type": ["null", "string"], "default": None})
    assert check_backward(new, RELEASED).compatible


def test_new_required_field_without_default_is_caught():
    new = copy.deepcopy(RELEASED)
    new["fields"].append({"name": "tenant", "type": "string"})
    report = check_backward(new, RELEASED)
    assert not report.compatible
    assert any("tenant" in p and "default" in p for p in report.problems)


def test_changed_field_type_is_caught():
    new = copy.deepcopy(RELEASED)
    for f in new["fields"]:
        if f["name"] == "occurred_at":
            f["type"] = "string"
    report = check_backward(new, RELEASED)
    assert not report.compatible
    assert any("string" in p and "long" in p for p in report.problems)


def test_check_all_reports_an_incompatible_working_copy(tmp_path):
    (tmp_path / "history").mkdir()
    (tmp_path / "history" / "touchpoint-v1.avsc").write_text(json.dumps(RELEASED))
    broken = copy.deepcopy(RELEASED)
    broken["fields"] = [f for f in broken["fields"] if f["name"] != "channel"]
    broken["fields"].append({"name": "tenant", "type": "string"})
    (tmp_path / "touchpoint.avsc").write_text(json.dumps(broken))
    [report] = check_all(tmp_path)
    assert report.subject == "touchpoint" and report.released == "touchpoint-v1.avsc"
    assert not report.compatible
