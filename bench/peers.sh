# Configuration of the peer proxies that bench/compare.sh and bench/ab.sh
# run, one worker each (sourced, not run).

# haproxy_cfg FILE LISTEN BACKEND: HAProxy in HTTP mode with one thread,
# tunnelling upgraded connections for an hour.
haproxy_cfg() {
  cat > "$1" <<CONF
global
  nbthread 1
  maxconn 9800
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
frontend fe
  bind $2
  default_backend be
backend be
  server s1 $3
CONF
}

# caddyfile FILE LISTEN BACKEND: Caddy's reverse_proxy, no admin API, no
# automatic HTTPS.
caddyfile() {
  printf '{\n  admin off\n  auto_https off\n}\nhttp://%s {\n  reverse_proxy %s\n}\n' "$2" "$3" > "$1"
}

# rt_prefix prints the command prefix that runs a process at real-time
# priority (SCHED_FIFO 10), or fails when this user may not. The latency
# workloads use it for the proxy, the backend and the load tool alike
# (BENCHMARKS.md, "Issue 14, seventh sitting": a kernel thread's periodic
# work otherwise makes most of every target's p99).
rt_prefix() {
  chrt -f 10 true 2>/dev/null || return 1
  echo "chrt -f 10"
}
