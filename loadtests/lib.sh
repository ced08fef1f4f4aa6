# Shared by the benchmark scripts (sourced from the repository root): servers
# run as in production, a scratch directory that goes away with every server
# started, and `start`, which waits until a server says it listens.

# A backtrace captured for every internal error value (RUST_BACKTRACE=1 in a
# developer shell) would skew every server measured.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Starts "$@" with output to $work/$name.log and waits for `pattern` there;
# the server's pid is then ${pids[-1]}.
start() {
  local name=$1 pattern=$2
  shift 2
  "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  wait_log "$name" "$pattern" "${pids[-1]}"
}

# Waits (at most 60 s) until $work/$name.log matches `pattern`; exits with
# the log when it does not, or when process `pid` ends first.
wait_log() {
  local name=$1 pattern=$2 pid=$3
  for _ in $(seq 1 600); do
    if grep -qE "$pattern" "$work/$name.log"; then return 0; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "$name: no \"$pattern\" in its log:" >&2
  cat "$work/$name.log" >&2
  exit 1
}

# The address a server printed as `listening on http://ADDR` in its log.
http_addr() {
  sed -n 's|^listening on http://\(.*\)|\1|p' "$work/$1.log" | head -1
}

# A process's CPU time so far (user + system, in clock ticks) and its
# resident memory (KiB), from /proc.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
