-- Alert lifecycle (issue 6): one alert per (customer, rule); open -> acknowledged -> resolved,
-- reopened on recurrence. `revision` counts status changes (a webhook goes out once per revision),
-- `occurrences` the moments grouped into the alert, `actor`/`note` who changed it last and why
-- ('recovery' when the customer's recovery resolved it).
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS updated_at DateTime64(3, 'UTC') DEFAULT created_at;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS revision UInt32 DEFAULT 1;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS occurrences UInt32 DEFAULT 1;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS actor Nullable(String);
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS note Nullable(String);
