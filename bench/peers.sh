# Configuration of the peer proxies that bench/compare.sh and bench/ab.sh
# run, one worker each (sourced, not run).

# haproxy_cfg FILE LISTEN BACKEND [PEM]: HAProxy in HTTP mode with one
# thread, tunnelling upgraded connections for an hour; with PEM (the
# certificate and its key in one file) its listener serves TLS.
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
  bind $2${4:+ ssl crt $4}
  default_backend be
backend be
  server s1 $3
CONF
}

# caddyfile FILE LISTEN BACKEND [CERT KEY]: Caddy's reverse_proxy, no
# admin API, no automatic HTTPS; with CERT and KEY its listener serves
# TLS with them.
caddyfile() {
  if [ $# -ge 5 ]; then
    printf '{\n  admin off\n  auto_https off\n}\nhttps://%s {\n  tls %s %s\n  reverse_proxy %s\n}\n' "$2" "$4" "$5" "$3" > "$1"
  else
    printf '{\n  admin off\n  auto_https off\n}\nhttp://%s {\n  reverse_proxy %s\n}\n' "$2" "$3" > "$1"
  fi
}

# test_cert DIR: a self-signed P-256 certificate for 127.0.0.1 in
# DIR/cert.pem, its key in DIR/key.pem, both in DIR/both.pem.
test_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$1/key.pem" -out "$1/cert.pem" 2>/dev/null
  cat "$1/cert.pem" "$1/key.pem" > "$1/both.pem"
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
