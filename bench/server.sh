#!/usr/bin/env bash
# redis-benchmark against `daxkv serve` (pool on /dev/shm, pmem forced: the
# real flush instructions on DRAM) and against redis-server with
# appendonly yes + appendfsync always (its AOF on /dev/shm too), in the same
# run, with and without pipelining. Not run by CI. Needs redis-tools and
# redis-server (apt-get install redis-tools redis-server). Cost: ~2-4 min.
#   N=1000000 bash bench/server.sh
# DAXKV_ARGS adds `daxkv serve` options (e.g. "--threads 1 --batch-ops 32").
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000000}
PORT_D=${PORT_D:-6411}
PORT_R=${PORT_R:-6412}
dir=$(mktemp -d /dev/shm/daxkv-bench.XXXXXX)
cleanup() {
    [[ -n ${dpid:-} ]] && kill "$dpid" 2>/dev/null || true
    [[ -n ${rpid:-} ]] && kill "$rpid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
cargo build --release -q -p daxkv-server
./target/release/daxkv serve --pool "$dir/bench.pool" --size 2G --persistence pmem --port "$PORT_D" ${DAXKV_ARGS:-} &
dpid=$!
redis-server --port "$PORT_R" --bind 127.0.0.1 --save '' --appendonly yes --appendfsync always \
    --dir "$dir" --daemonize no --logfile "$dir/redis.log" &
rpid=$!
for p in "$PORT_D" "$PORT_R"; do
    until redis-cli -p "$p" PING >/dev/null 2>&1; do sleep 0.1; done
done
echo "== $(date -u '+%F %T') UTC, $(nproc) cores, N=$N, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for P in 1 16; do
    for name in daxkv redis; do
        port=$PORT_D; [[ $name == redis ]] && port=$PORT_R
        echo "== $name, -P $P"
        redis-benchmark -p "$port" -t set,get -n "$N" -r 1000000 -d 100 -c 50 -P "$P" -q 2>&1 | tr "\r" "\n" | grep "requests per second"
    done
done
