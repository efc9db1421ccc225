-- After a bulk load: the indexes bench/sql/indexes-drop.sql dropped, as
-- they were defined.
SELECT indexdef FROM bench_indexes \gexec
DROP TABLE bench_indexes;
