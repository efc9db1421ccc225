-- Before a bulk load: keep the definitions of the deliveries table's
-- plain indexes (not the primary key nor the unique constraint) in
-- bench_indexes, and drop them; bench/sql/indexes-create.sql builds them
-- again, which is faster than maintaining them row by row.
CREATE TABLE bench_indexes AS
SELECT i.indexname, i.indexdef FROM pg_indexes i
 WHERE i.schemaname = 'public' AND i.tablename = 'deliveries'
   AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                    WHERE c.conname = i.indexname);
SELECT format('DROP INDEX %I', indexname) FROM bench_indexes \gexec
