-- Item 4: the scheduling lag of the deliveries tagged :tag, sent time -
-- due time in milliseconds: p50, p99 and the largest; and the time from
-- the first due time to the last send (the drain time of a burst).
SELECT count(*) FILTER (WHERE status = 'sent') AS sent,
       count(*) FILTER (WHERE status <> 'sent') AS not_sent,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY
             extract(epoch FROM sent_at - due_at) * 1000)::numeric, 1) AS p50_ms,
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY
             extract(epoch FROM sent_at - due_at) * 1000)::numeric, 1) AS p99_ms,
       round((extract(epoch FROM max(sent_at - due_at)) * 1000)::numeric, 1)
         AS max_ms,
       round(extract(epoch FROM max(sent_at) - min(due_at))::numeric, 3)
         AS drain_s
  FROM deliveries WHERE occurrence LIKE :'tag' || ':%';
