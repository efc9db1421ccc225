-- Item 4: the scheduling lag of the deliveries tagged :tag (of :trigger),
-- sent time - due time in milliseconds: p50, p99 and the largest; the time
-- from the first due time to the last send (the drain time of a burst);
-- and the rate between the first and the last send, as bench/sql/rate.sql.
SELECT count(*) FILTER (WHERE status = 'sent') AS sent,
       count(*) FILTER (WHERE status <> 'sent') AS not_sent,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY
             extract(epoch FROM sent_at - due_at) * 1000)::numeric, 1) AS p50_ms,
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY
             extract(epoch FROM sent_at - due_at) * 1000)::numeric, 1) AS p99_ms,
       round((extract(epoch FROM max(sent_at - due_at)) * 1000)::numeric, 1)
         AS max_ms,
       round(extract(epoch FROM max(sent_at) - min(due_at))::numeric, 3)
         AS drain_s,
       round(((count(*) FILTER (WHERE status = 'sent') - 1)
              / extract(epoch FROM max(sent_at) - min(sent_at)))::numeric, 1)
         AS per_second
  FROM deliveries
 WHERE trigger_id = :'trigger' AND occurrence LIKE :'tag' || ':%';
-- what became of those not sent, if any
SELECT status, reason, count(*) FROM deliveries
 WHERE trigger_id = :'trigger' AND occurrence LIKE :'tag' || ':%'
   AND status <> 'sent'
 GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 5;
