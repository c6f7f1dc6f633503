#!/usr/bin/env bash
# etcd beside Benmo: a 5-member etcd cluster on 127.0.0.1 driven closed loop by wrk at the
# same concurrencies as `benmo bench --clients`, printing the same columns. A measuring tool,
# not part of CI. Installs etcd and wrk from Debian's packages when missing (run as root).
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/etcd-bench.sh [--clients C,C,..] [--duration SECONDS] [--members M]

Starts an M-member etcd cluster (fsync on, the default) on free loopback ports in a temp
dir, finds its leader, and for each client count C runs wrk with C connections for
SECONDS, each connection keeping one PUT /v3/kv/put outstanding (a 12-byte key, a 32-byte
value). Prints puts/s, p50, p99 and max per C. Stops exactly the processes it started.

flags:
  --clients C,..      client counts (default 1,16,64)
  --duration SECONDS  per client count (default 5)
  --members M         etcd members (default 5)
  -h, --help          this text

example:
  scripts/etcd-bench.sh --clients 1,16,64
USAGE
}

clients=1,16,64
duration=5
members=5
while [ "$#" -gt 0 ]; do
  case "$1" in
    --clients) clients="${2:?--clients needs a value}"; shift 2 ;;
    --duration) duration="${2:?--duration needs a value}"; shift 2 ;;
    --members) members="${2:?--members needs a value}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
[[ "$clients" =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "error: --clients: expected counts such as 1,16,64" >&2; exit 2; }
[[ "$duration" =~ ^[1-9][0-9]*$ ]] || { echo "error: --duration: expected whole seconds" >&2; exit 2; }
[[ "$members" =~ ^[1-9][0-9]*$ ]] || { echo "error: --members: expected a count" >&2; exit 2; }

need() { command -v "$1" >/dev/null 2>&1; }
if ! need etcd || ! need etcdctl || ! need wrk; then
  if [ "$(id -u)" != 0 ]; then
    echo "error: etcd, etcdctl or wrk is missing; as root: apt-get install -y etcd-server etcd-client wrk" >&2
    exit 1
  fi
  echo "installing etcd-server etcd-client wrk" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client wrk >/dev/null
fi

tmp=$(mktemp -d /tmp/etcd-bench.XXXXXX)
pids=()
cleanup() {
  if [ "${#pids[@]}" -gt 0 ]; then
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port is taken if something accepts a connection on it.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# 2*M consecutive free ports below the ephemeral range: clients at base+i, peers above.
base=
for _ in $(seq 100); do
  try=$((20000 + RANDOM % 10000))
  ok=1
  for i in $(seq 0 $((2 * members - 1))); do
    port_free $((try + i)) || { ok=0; break; }
  done
  if [ "$ok" = 1 ]; then base=$try; break; fi
done
[ -n "$base" ] || { echo "error: no $((2 * members)) free consecutive ports on 127.0.0.1" >&2; exit 1; }

client_url() { echo "http://127.0.0.1:$((base + $1))"; }
peer_url() { echo "http://127.0.0.1:$((base + members + $1))"; }
initial=
endpoints=
for i in $(seq 0 $((members - 1))); do
  initial+="${initial:+,}m$i=$(peer_url "$i")"
  endpoints+="${endpoints:+,}$(client_url "$i")"
done
for i in $(seq 0 $((members - 1))); do
  etcd --name "m$i" --data-dir "$tmp/m$i" \
    --listen-client-urls "$(client_url "$i")" --advertise-client-urls "$(client_url "$i")" \
    --listen-peer-urls "$(peer_url "$i")" --initial-advertise-peer-urls "$(peer_url "$i")" \
    --initial-cluster "$initial" --initial-cluster-token etcd-bench --initial-cluster-state new \
    --logger zap --log-outputs "$tmp/m$i.log" >"$tmp/m$i.out" 2>&1 &
  pids+=("$!")
done

healthy=0
for _ in $(seq 300); do
  if etcdctl --endpoints="$endpoints" endpoint health >/dev/null 2>&1; then healthy=1; break; fi
  sleep 0.1
done
[ "$healthy" = 1 ] || { echo "error: etcd did not become healthy; logs in $tmp were:" >&2; tail -n 3 "$tmp"/m*.log >&2; exit 1; }

# The leader: the member whose id is the leader id it reports.
leader=
for i in $(seq 0 $((members - 1))); do
  fields=$(etcdctl --endpoints="$(client_url "$i")" endpoint status -w fields)
  id=$(awk -F' : ' '/"MemberID"/ {print $2}' <<<"$fields")
  lead=$(awk -F' : ' '/"Leader"/ {print $2}' <<<"$fields")
  if [ -n "$id" ] && [ "$id" = "$lead" ]; then leader=$i; fi
done
[ -n "$leader" ] || { echo "error: no etcd member says it is the leader" >&2; exit 1; }

cat >"$tmp/put.lua" <<'LUA'
-- Closed-loop PUTs to etcd's v3 JSON gateway: a 12-byte key, a 32-byte value, base64.
local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(data)
  local out = {}
  for i = 1, #data, 3 do
    local a, b, c = data:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    for k = 3, 0, -1 do
      if (k == 1 and not b) or (k == 0 and not c) then
        out[#out + 1] = "="
      else
        local v = math.floor(n / 64 ^ k) % 64
        out[#out + 1] = chars:sub(v + 1, v + 1)
      end
    end
  end
  return table.concat(out)
end

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

local value = b64(string.rep("v", 32))
local n = 0
local headers = { ["Content-Type"] = "application/json" }
function request()
  n = n + 1
  local key = b64(string.format("k%03d%08d", id, n % 100000000))
  local body = '{"key":"' .. key .. '","value":"' .. value .. '"}'
  return wrk.format("POST", "/v3/kv/put", headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max, e.status,
    e.connect + e.read + e.write + e.timeout))
end
LUA

url=$(client_url "$leader")
# Every key and value must come back as written: one put checked by hand.
curl_check() {
  local body='{"key":"azAwMTAwMDAwMDAx","value":"dnZ2dnZ2dnZ2dnZ2dnZ2dnZ2dnZ2dnZ2dnZ2dnZ2dnY="}'
  exec 3<>"/dev/tcp/127.0.0.1/$((base + leader))"
  printf 'POST /v3/kv/put HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' "${#body}" "$body" >&3
  head -n 1 <&3
  exec 3>&-
}
status_line=$(curl_check)
[[ "$status_line" == *" 200 "* ]] || { echo "error: a PUT to the leader answered: $status_line" >&2; exit 1; }

run_wrk() { # connections seconds
  local threads=$(($1 < 2 ? $1 : 2))
  wrk -t "$threads" -c "$1" -d "${2}s" --timeout 10s -s "$tmp/put.lua" "$url" | awk '/^RESULT/'
}

run_wrk 16 1 >/dev/null # warm-up: connections, leader, page cache
echo "etcd-bench: etcd $(etcd --version | awk '/etcd Version/ {print $3}'), $members members on 127.0.0.1, fsync on, wrk PUT /v3/kv/put of 32-byte values at the leader (m$leader), ${duration} s each"
echo "clients       puts      puts/s   p50 ms   p99 ms   max ms"
IFS=, read -ra counts <<<"$clients"
for c in "${counts[@]}"; do
  read -r _ requests micros p50 p99 max bad_status bad_socket <<<"$(run_wrk "$c" "$duration")"
  if [ "${bad_status:-1}" != 0 ] || [ "${bad_socket:-1}" != 0 ]; then
    echo "error: at $c clients wrk saw ${bad_status:-?} non-2xx answers and ${bad_socket:-?} socket errors" >&2
    exit 1
  fi
  awk -v c="$c" -v r="$requests" -v us="$micros" -v a="$p50" -v b="$p99" -v m="$max" \
    'BEGIN { printf "%7d %10d %11.0f %8.2f %8.2f %8.2f\n", c, r, r / (us / 1e6), a / 1e3, b / 1e3, m / 1e3 }'
done
