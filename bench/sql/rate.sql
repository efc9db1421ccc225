-- Item 3: how fast the scheduler sent the deliveries tagged :tag (of
-- :trigger; all due at once): deliveries sent, and sent per second between
-- the first and the last send (sent_at is the database's clock when the
-- result was written).
SELECT count(*) FILTER (WHERE status = 'sent') AS sent,
       count(*) FILTER (WHERE status <> 'sent') AS not_sent,
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
