-- Receipt of the triggering event -> the moment detected (ms). Set on the version written when the
-- moment was first detected; later versions (recovery status changes) carry NULL, so read it
-- without FINAL: SELECT moment_id, max(latency_ms) FROM negative_moments GROUP BY moment_id.
ALTER TABLE negative_moments ADD COLUMN IF NOT EXISTS latency_ms Nullable(Float64);
