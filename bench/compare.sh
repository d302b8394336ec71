#!/usr/bin/env bash
# Compares tether with nginx, HAProxy, Caddy, a plain Go TCP relay and the
# backend directly, on the same workloads, in one run, and prints a
# markdown report (machine, versions, tables with ratios) on stdout.
#
#   bench/compare.sh            # default mode, about 15 minutes on 2 shared cores
#   bench/compare.sh -quick     # smoke test, under a minute
#   bench/compare.sh -out FILE  # also write the report to FILE
#   bench/compare.sh -no-rt     # latency at normal priority (see below)
#
# Each proxy runs alone on core 0 (taskset -c 0) with one worker/thread
# (nginx worker_processes 1, HAProxy nbthread 1, Caddy and tether and the
# relay GOMAXPROCS=1); the load tool and the backend share core 1. Every
# proxy is started fresh for each workload. CPU seconds of the proxy (for
# nginx: its worker), the backend and the load tool come from
# /proc/<pid>/stat over each measured window. nginx, haproxy and caddy are
# installed with apt-get when missing; a peer that cannot be installed is
# skipped and the report says so. Needs root for apt-get (and for chrt),
# 2+ cores, and 20,000 open files per process (idle holds 9,000 sessions).
#
# The latency workload runs the proxy, the backend and the load tool at
# real-time priority (chrt -f 10) when chrt allows it, and its table
# heading says so: a kernel thread that wakes every 512 ms on this
# machine (kdamond, 1-5 ms each time) otherwise preempts one of them and
# makes most of every target's p99 (BENCHMARKS.md, "Issue 14, seventh
# sitting"). The throughput workloads run at normal priority.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:/usr/sbin"

quick=0
out=""
rt=1
while [ $# -gt 0 ]; do
  case "$1" in
    -quick|--quick) quick=1 ;;
    -out|--out) out="$2"; shift ;;
    -no-rt) rt="" ;;
    *) echo "usage: $0 [-quick] [-out FILE] [-no-rt]" >&2; exit 2 ;;
  esac
  shift
done

if [ "$quick" = 1 ]; then
  dur=2s; hold=3s; sessions=500; lat_conns=200; lat_rate=1000; hb_default=1s; settle=1s; reps=1; lat_reps=1
else
  dur=7s; hold=16s; sessions=9000; lat_conns=1000; lat_rate=5000; hb_default=15s; settle=2s; reps=3; lat_reps=6
fi
hb_fast=500ms

log() { echo "compare: $*" >&2; }
. bench/peers.sh

# prio: the command prefix for the latency workload's processes.
prio=""
if [ -n "$rt" ]; then
  prio=$(rt_prefix) || log "chrt -f is not allowed here: latency at normal priority"
fi

tmp=$(mktemp -d /tmp/tether-compare.XXXXXX)
results="$tmp/results.jsonl"
: > "$results"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# --- peers
skipped=()
peers=()
want_pkg() { # name binary
  if command -v "$2" >/dev/null 2>&1; then peers+=("$1"); return; fi
  log "installing $1"
  if { [ -n "${apt_updated:-}" ] || { apt-get update -qq && apt_updated=1; }; } >/dev/null 2>&1 &&
     DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null 2>&1 &&
     command -v "$2" >/dev/null 2>&1; then
    peers+=("$1")
  else
    skipped+=("$1 (apt-get install $1 failed)")
    log "skipping $1: apt-get install failed"
  fi
}
want_pkg nginx nginx
want_pkg haproxy haproxy
want_pkg caddy caddy

log "building the load tool and tether"
go build -o "$tmp/bench" ./bench
CGO_ENABLED=0 go build -trimpath -o "$tmp/tether" .

backend_addr=127.0.0.1:19101
proxy_port=19102
admin_port=19103

wait_port() { # port
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  log "nothing listens on port $1"; return 1
}

taskset -c 1 "$tmp/bench" backend -addr "$backend_addr" 2>"$tmp/backend.log" &
backend_pid=$!
pids+=("$backend_pid")
wait_port "${backend_addr##*:}"

# start_target NAME [tether env...]: starts the proxy on core 0; sets
# target_pid (the process to kill), measure_pid (whose CPU/RSS count) and
# url.
start_target() {
  local name=$1; shift
  local pre="" # the latency workload's real-time priority
  [ "$mode" = latency ] && pre=$prio
  url="ws://127.0.0.1:$proxy_port/"
  case "$name" in
    direct)
      url="ws://$backend_addr/"; target_pid=""; measure_pid=0; return ;;
    relay)
      # idle: without splice, which needs 6 open files per session
      GOMAXPROCS=1 $pre taskset -c 0 "$tmp/bench" relay -listen "127.0.0.1:$proxy_port" -to "$backend_addr" \
        $([ "$mode" = idle ] && echo -nosplice) 2>"$tmp/relay.log" &
      target_pid=$! ;;
    nginx)
      mkdir -p "$tmp/nginx"
      cat > "$tmp/nginx/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 19500; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
  upstream backend { server $backend_addr; }
  server {
    listen 127.0.0.1:$proxy_port;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_set_header Host \$host;
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
    }
  }
}
CONF
      $pre taskset -c 0 nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log" 2>>"$tmp/nginx/error.log" &
      target_pid=$! ;;
    haproxy)
      haproxy_cfg "$tmp/haproxy.cfg" "127.0.0.1:$proxy_port" "$backend_addr"
      $pre taskset -c 0 haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 &
      target_pid=$! ;;
    caddy)
      caddyfile "$tmp/Caddyfile" "127.0.0.1:$proxy_port" "$backend_addr"
      GOMAXPROCS=1 XDG_DATA_HOME="$tmp" XDG_CONFIG_HOME="$tmp" $pre taskset -c 0 caddy run --config "$tmp/Caddyfile" --adapter caddyfile >"$tmp/caddy.log" 2>&1 &
      target_pid=$! ;;
    tether*)
      env GOMAXPROCS=1 TETHER_UPSTREAM_URL="ws://$backend_addr" TETHER_LISTEN_ADDR="127.0.0.1:$proxy_port" \
        TETHER_ADMIN_ADDR="127.0.0.1:$admin_port" TETHER_LOG_LEVEL=warn "$@" \
        $pre taskset -c 0 "$tmp/tether" 2>>"$tmp/tether.log" &
      target_pid=$! ;;
  esac
  pids+=("$target_pid")
  wait_port "$proxy_port" || return 1
  measure_pid=$target_pid
  if [ "$name" = nginx ]; then
    for _ in $(seq 100); do
      measure_pid=$(pgrep -P "$target_pid" | head -1 || true)
      [ -n "$measure_pid" ] && break
      sleep 0.05
    done
  fi
}

stop_target() {
  [ -n "$target_pid" ] || return 0
  kill "$target_pid" 2>/dev/null || true
  wait "$target_pid" 2>/dev/null || true
  target_pid=""
}

failed=()
# The 500 ms heartbeat run measures the cost of sending pings and reading
# pongs; its timeout is raised to 20 s so that a scheduling stall on a
# shared machine (the load tool answers 36,000 pings/s) does not end
# sessions, which would measure something else.
# measure LABEL TARGET MODE [tool flags] [-- tether env...]
measure() {
  local label=$1 target=$2; mode=$3; shift 3
  local flags=() envs=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do flags+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  envs=("$@")
  if ! start_target "$target" "${envs[@]}"; then
    log "$target did not start; its logs:"; tail -5 "$tmp"/*.log "$tmp"/nginx/*.log 2>/dev/null >&2 || true
    failed+=("$label/$target (did not start)")
    stop_target
    return 0
  fi
  local extra=()
  case "$target" in tether*) extra+=(-admin "http://127.0.0.1:$admin_port") ;; esac
  [ "$mode" = idle ] || extra=()
  local pre=""
  [ "$mode" = latency ] && pre=$prio
  if ! $pre taskset -c 1 "$tmp/bench" "$mode" -url "$url" -target "$target" -label "$label" \
      -proxy-pid "$measure_pid" -backend-pid "$backend_pid" -json "${flags[@]}" "${extra[@]}" >>"$results"; then
    failed+=("$label/$target")
  fi
  stop_target
  sleep 0.3
}

targets=(direct relay "${peers[@]}" tether)
proxies=(relay "${peers[@]}" tether)
t0=$(date +%s)
# Each throughput workload runs $reps times and latency $lat_reps times,
# the targets alternating within each round, so that a slow minute of this
# shared machine hits every target alike; the table shows each target's
# median run and the spread.
for _ in $(seq "$reps"); do
  for t in "${targets[@]}"; do
    measure tput-1k "$t" throughput -conns 64 -size 1024 -inflight 16 -duration "$dur"
  done
done
for _ in $(seq "$reps"); do
  for t in "${targets[@]}"; do
    measure tput-64k "$t" throughput -conns 16 -size 65536 -inflight 4 -duration "$dur"
  done
done
# The backend too runs at the latency workload's priority while it lasts
# (every thread: chrt -a).
[ -z "$prio" ] || chrt -a -f -p 10 "$backend_pid" >/dev/null
for _ in $(seq "$lat_reps"); do
  for t in "${targets[@]}"; do
    measure latency "$t" latency -conns "$lat_conns" -rate "$lat_rate" -size 128 -duration "$dur"
  done
done
[ -z "$prio" ] || chrt -a -o -p 0 "$backend_pid" >/dev/null
for t in "${proxies[@]}"; do
  measure idle "$t" idle -sessions "$sessions" -duration "$hold" -settle "$settle" -connect-rate 3000 \
    -- TETHER_CLIENT_HEARTBEAT_INTERVAL="$hb_default" TETHER_UPSTREAM_HEARTBEAT_INTERVAL="$hb_default"
done
measure idle-hb500 tether idle -sessions "$sessions" -duration "$dur" -settle "$settle" -connect-rate 3000 \
  -- TETHER_CLIENT_HEARTBEAT_MODE=ws TETHER_CLIENT_HEARTBEAT_INTERVAL="$hb_fast" TETHER_UPSTREAM_HEARTBEAT_INTERVAL="$hb_fast" \
     TETHER_CLIENT_HEARTBEAT_TIMEOUT=20s TETHER_UPSTREAM_HEARTBEAT_TIMEOUT=20s
measure deflate tether throughput -conns 64 -size 1024 -inflight 16 -duration "$dur" -text -deflate \
  -- TETHER_CLIENT_COMPRESSION=false
measure deflate tether-compression throughput -conns 64 -size 1024 -inflight 16 -duration "$dur" -text -deflate \
  -- TETHER_CLIENT_COMPRESSION=true
elapsed=$(( $(date +%s) - t0 ))

# idle_policy names a VM guest's halt polling, which moves every latency
# figure (BENCHMARKS.md "Issue 14, eighth sitting"): a core that halts at
# once pays the hypervisor for every wake-up.
idle_policy() {
  local f=/sys/module/haltpoll/parameters/guest_halt_poll_ns
  if [ -r "$f" ]; then echo ", guest halt polling $(cat "$f") ns"; fi
}

report() {
  echo "## Run of $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Command: \`bench/compare.sh$([ "$quick" = 1 ] && echo ' -quick')\` (took ${elapsed} s of measuring)."
  echo
  echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), Linux $(uname -r), open files $(ulimit -n)$(idle_policy)."
  echo "Versions: tether $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty'), $(go version | cut -d' ' -f3),"
  for p in "${peers[@]}"; do
    case "$p" in
      nginx) echo "  $(nginx -v 2>&1)," ;;
      haproxy) echo "  $(haproxy -v | head -1 | cut -d' ' -f1-3)," ;;
      caddy) echo "  caddy $(caddy version | cut -d' ' -f1)," ;;
    esac
  done
  echo "  all with one worker/thread on core 0; load tool and backend on core 1."
  if [ "${#skipped[@]}" -gt 0 ]; then echo; echo "Skipped: ${skipped[*]}."; fi
  if [ "${#failed[@]}" -gt 0 ]; then echo; echo "Failed runs (see stderr): ${failed[*]}."; fi
  echo
  "$tmp/bench" table -in "$results" -ref tether
}
if [ -n "$out" ]; then
  report | tee "$out"
else
  report
fi
