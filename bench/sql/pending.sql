-- How many deliveries tagged :tag are still to be sent.
SELECT count(*) FROM deliveries
 WHERE occurrence LIKE :'tag' || ':%' AND status IN ('scheduled', 'sending');
