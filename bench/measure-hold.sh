measure_hold() { say "holding; ids in $OUT/work/ids.sh"; sleep 3000; }
