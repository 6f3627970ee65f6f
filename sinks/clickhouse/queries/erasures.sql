-- summary: Customer erasures carried out: the audit trail (no identifier; counts and a digest)
-- param: since DateTime64(3) = now-30d
-- One row per erasure requested since `since` (`cem privacy erase`, POST /v1/privacy/erase):
-- who asked, when it was asked and done, whether the customer was known, how many profiles,
-- identifiers and rows were removed, and the salted digest over the identifiers.
SELECT erasure_id, requested_at, completed_at, requester, status, profiles_removed, identifiers_removed,
       arraySum(mapValues(rows_deleted)) AS rows_deleted, identifiers_digest
FROM privacy_erasures FINAL
WHERE requested_at >= {since:DateTime64(3)}
ORDER BY requested_at DESC, erasure_id
