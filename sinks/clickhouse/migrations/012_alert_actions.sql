-- Recovery playbooks (cem/playbooks.py): every alert row carries the recommended action for its
-- latest moment, chosen by rule, channel and customer value (lifetime spend band, lifecycle
-- stage at the time), and whether it escalated (its moment's recovery window closed unrecovered:
-- severity up, to the escalation team, once). Rows landed before this migration read '' and 0.
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS action LowCardinality(String) DEFAULT '';
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS action_detail String DEFAULT '';
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS value_band LowCardinality(String) DEFAULT '';
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS lifecycle_stage LowCardinality(String) DEFAULT '';
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS escalated UInt8 DEFAULT 0;
