-- How many deliveries tagged :tag (of :trigger) are still to be sent; the
-- unique index on (trigger_id, occurrence) finds them.
SELECT count(*) FROM deliveries
 WHERE trigger_id = :'trigger' AND occurrence LIKE :'tag' || ':%'
   AND status IN ('scheduled', 'sending');
