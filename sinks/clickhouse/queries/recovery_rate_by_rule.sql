-- summary: Moments per rule and how many were recovered, unrecovered or still open
-- param: since DateTime64(3) = 1970-01-01 00:00:00
-- recovery_rate = recovered / (recovered + unrecovered): open moments are not decided yet.
SELECT rule, count() AS moments,
       countIf(recovery_status = 'recovered') AS recovered,
       countIf(recovery_status = 'unrecovered') AS unrecovered,
       countIf(recovery_status = 'open') AS open,
       round(recovered / nullIf(recovered + unrecovered, 0), 3) AS recovery_rate
FROM negative_moments FINAL
WHERE occurred_at >= {since:DateTime64(3)}
GROUP BY rule
ORDER BY rule
