-- touchpoint schema v2: the sender's own event name (Segment track event, Snowplow structured or
-- self-describing event) beside cem's event_type. Older records land it as NULL.
ALTER TABLE touchpoints ADD COLUMN IF NOT EXISTS event_name Nullable(String) AFTER event_type;
