# shellcheck shell=bash
# Item 6, memory: the RSS of each worker process before and after
# BENCH_MEM_REQUESTS requests (wrk + bench/memory.lua, a mix of API calls:
# cheap reads, feed pages, 404s, 401s), after a warm-up of 50,000 of the
# same. The figure is the largest growth among the workers.

measure_memory() {
    local master workers w before after growth max='' url detail=''
    say "item 6: memory over $BENCH_MEM_REQUESTS requests"
    master=$ECHELON_PID
    workers=$(nginx_workers "$master")
    url="http://127.0.0.1:$BENCH_PORT"
    run_recorded memory-warmup "$BENCH_DIR/wrk-until.sh" -t 2 -c 32 -d 120s \
        -s "$BENCH_DIR/memory.lua" "$url" -- "$API_KEY" "$EMPLOYEE" 50000 2
    declare -A rss
    for w in $workers; do
        rss[$w]=$(rss_kb "$w")
    done
    run_recorded memory "$BENCH_DIR/wrk-until.sh" -t 2 -c 32 -d 600s --latency \
        -s "$BENCH_DIR/memory.lua" "$url" -- "$API_KEY" "$EMPLOYEE" \
        "$BENCH_MEM_REQUESTS" 2
    for w in $workers; do
        before=${rss[$w]}
        after=$(rss_kb "$w")
        growth=$((after - before))
        echo "worker $w: VmRSS $before kB before, $after kB after ($growth kB)" \
            >> "$OUT/raw/memory.txt"
        if [ -z "$max" ] || [ "$growth" -gt "$max" ]; then
            max=$growth
        fi
        detail="$detail${detail:+, }$before → $after kB"
    done
    record memory echelon 1 "$max" kB "$CMD_ID"
    record memory detail 1 "$detail" - -
    say "  largest worker RSS growth: $max kB"
}
