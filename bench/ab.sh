#!/usr/bin/env bash
# A/B throughput: runs the same throughput workload against several
# targets, alternating them within each round so that a slow minute of a
# shared machine hits every target alike, and prints the table (median
# run per target, spread, which side was saturated). Each target runs
# alone on core 0 with one worker; the load tool and echo backend share
# core 1, as in compare.sh.
#
#   bench/ab.sh [-reps 3] [-duration 5s] [-size 1024] [-conns 64] [-inflight 16] [-resume] [-tls] TARGET...
#   bench/ab.sh -rate 5000 [-conns 1000] [-size 128] [-reps 6] [-duration 7s] TARGET...
#
# -rate runs the latency workload instead (a fixed rate over the
# connections, open loop): p50/p99 and the proxy's CPU seconds at that
# rate, compare.sh's latency rows; -conns 100 at the same rate has each
# connection send every 20 ms instead of every 200 ms.
#
# TARGET is haproxy, caddy, or the path of a tether binary (its file name
# labels it), e.g. two builds of tether:
#
#   go build -o /tmp/tether-a . && (git stash; go build -o /tmp/tether-b .; git stash pop)
#   bench/ab.sh /tmp/tether-a /tmp/tether-b haproxy
#
# -resume makes the load tool ask tether for resumable sessions; a tether
# TARGET ending in +resume does so for that target alone, so that plain and
# resumable sessions of one binary alternate:
#
#   bench/ab.sh /tmp/tether-a+resume /tmp/tether-a
#
# With -rate the proxy, the backend and the load tool run at real-time
# priority (chrt -f 10) when chrt allows it: a kernel thread that wakes
# every 512 ms on this machine (kdamond) otherwise stalls whichever of them
# it preempts for 1-5 ms, which is most of every target's p99 (BENCHMARKS.md
# "Issue 14, seventh sitting"). -no-rt runs them at normal priority.
#
# -hops (with -rate) also traces every round trip hop by hop with bpftrace
# (root; apt-get install bpftrace): the proxy's own part of the round trip,
# the backend's and the whole on the wire, from the kernel's arrival
# times, without the load tool's own waits (bench latency -hops; a second
# table).
#
# -tls has every target serve TLS on its listener with a self-signed
# certificate (openssl) and the load tool dial wss:// (it accepts any
# certificate); the backend stays plain ws://, e.g. the idle cost or the
# latency of TLS termination in each proxy.
#
# -keep FILE keeps every run's JSON line (one per target and round, in
# the order run), e.g. to compare targets round by round.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:/usr/sbin"
reps=3 dur=5s size=1024 conns=64 inflight=16 resume="" rate="" keep="" rt=1 hops="" tls=""
size_set="" conns_set=""
while [ $# -gt 0 ]; do
  case "$1" in
    -reps) reps=$2; shift 2 ;;
    -duration) dur=$2; shift 2 ;;
    -size) size=$2; size_set=1; shift 2 ;;
    -conns) conns=$2; conns_set=1; shift 2 ;;
    -rate) rate=$2; shift 2 ;;
    -inflight) inflight=$2; shift 2 ;;
    -resume) resume=-resume; shift ;;
    -keep) keep=$2; shift 2 ;;
    -no-rt) rt=""; shift ;;
    -hops) hops=1; shift ;;
    -tls) tls=1; shift ;;
    -*) echo "unknown flag $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: $0 [flags] TARGET..." >&2; exit 2; }
if [ -n "$rate" ]; then
  # compare.sh's latency workload unless told otherwise.
  [ -n "$size_set" ] || size=128
  [ -n "$conns_set" ] || conns=1000
fi
. bench/peers.sh
# prio: the command prefix for the latency workload's processes.
prio=""
if [ -n "$rate" ] && [ -n "$rt" ]; then
  prio=$(rt_prefix) || echo "ab.sh: chrt -f is not allowed here; running at normal priority" >&2
fi
tmp=$(mktemp -d /tmp/tether-ab.XXXXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
go build -o "$tmp/bench" ./bench
backend=127.0.0.1:19801 proxy=127.0.0.1:19802 admin=127.0.0.1:19803
$prio taskset -c 1 "$tmp/bench" backend -addr $backend 2>/dev/null &
bk=$!; pids+=("$bk")
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
wait_port "${backend##*:}"
scheme=ws tetherenv=()
if [ -n "$tls" ]; then
  test_cert "$tmp"
  scheme=wss tetherenv=(TETHER_TLS_CERT_FILE="$tmp/cert.pem" TETHER_TLS_KEY_FILE="$tmp/key.pem")
  haproxy_cfg "$tmp/haproxy.cfg" "$proxy" "$backend" "$tmp/both.pem"
  caddyfile "$tmp/Caddyfile" "$proxy" "$backend" "$tmp/cert.pem" "$tmp/key.pem"
else
  haproxy_cfg "$tmp/haproxy.cfg" "$proxy" "$backend"
  caddyfile "$tmp/Caddyfile" "$proxy" "$backend"
fi
for _ in $(seq "$reps"); do
  for t in "$@"; do
    tres=$resume
    case "$t" in *+resume) tres=-resume ;; esac
    case "$t" in
      haproxy) $prio taskset -c 0 haproxy -db -f "$tmp/haproxy.cfg" >/dev/null 2>&1 & p=$! label=haproxy ;;
      caddy) GOMAXPROCS=1 XDG_DATA_HOME="$tmp" XDG_CONFIG_HOME="$tmp" $prio taskset -c 0 caddy run --config "$tmp/Caddyfile" --adapter caddyfile >/dev/null 2>&1 & p=$! label=caddy ;;
      *) env GOMAXPROCS=1 "${tetherenv[@]}" TETHER_UPSTREAM_URL="ws://$backend" TETHER_LISTEN_ADDR=$proxy TETHER_ADMIN_ADDR=$admin TETHER_LOG_LEVEL=warn \
           $prio taskset -c 0 "${t%+resume}" 2>/dev/null & p=$! label=$(basename "$t") ;;
    esac
    pids+=("$p")
    wait_port "${proxy##*:}"
    if [ -n "$rate" ]; then
      $prio taskset -c 1 "$tmp/bench" latency -url "$scheme://$proxy/" -target "$label" -label "latency-$conns" -duration "$dur" \
        -size "$size" -conns "$conns" -rate "$rate" $tres ${hops:+-hops $backend} -proxy-pid "$p" -backend-pid "$bk" -json 2>/dev/null >> "$tmp/results.jsonl" || true
    else
      taskset -c 1 "$tmp/bench" throughput -url "$scheme://$proxy/" -target "$label" -label "throughput-$size" -duration "$dur" \
        -size "$size" -conns "$conns" -inflight "$inflight" $tres -proxy-pid "$p" -backend-pid "$bk" -json 2>/dev/null >> "$tmp/results.jsonl" || true
    fi
    kill "$p"; wait "$p" 2>/dev/null || true
    sleep 0.2
  done
done
last=$(basename "${!#}")
[ -z "$keep" ] || cp "$tmp/results.jsonl" "$keep"
"$tmp/bench" table -in "$tmp/results.jsonl" -ref "$last"
