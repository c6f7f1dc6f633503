#!/usr/bin/env bash
# A short tour of Benmo on a fresh five-node cluster: transfers commit
# everywhere, a crashed node catches up, a partitioned minority cannot commit
# until the partition heals, and the audit passes. It ends by drawing the
# round the majority decided during the partition (benmo trace) to an SVG file.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER="$ROOT/scripts/cluster.sh"

usage() {
    cat <<EOF
usage: scripts/demo.sh [--base-port P] [--delay MIN..MAX] [--keep-data] [--picture FILE]

Starts a fresh five-node Benmo cluster on 127.0.0.1 in a temporary data dir,
walks through what it does, checking each claim against what the nodes
themselves report, and stops it again.  Exits non-zero, with the reason, as
soon as something does not happen as narrated.  Takes under half a minute
(13 to 20 s on a busy two-core machine), after building the release binary if
it is not built yet (3 minutes from scratch on that machine).
Ends by writing the picture of the round decided during the partition
(benmo trace) to an SVG file, and naming it.

  --base-port P       use ports P..P+4 (default: a free range picked at random)
  --delay MIN..MAX    random wait before a node runs for leader (default: the nodes' own)
  --keep-data         keep the temporary data dir (logs, chains) afterwards
  --picture FILE      write that picture to FILE (default: partition-round.svg
                      in a new temporary directory)
  -h, --help          this text

After a failure the data dir is kept, and its path printed.
EOF
}

BASE_PORT=""
DELAY=""
KEEP_DATA=0
PICTURE=""
while (($#)); do
    case $1 in
        -h | --help) usage; exit 0 ;;
        --base-port) (($# >= 2)) || { usage >&2; exit 2; }; BASE_PORT=$2; shift 2 ;;
        --delay) (($# >= 2)) || { usage >&2; exit 2; }; DELAY=$2; shift 2 ;;
        --keep-data) KEEP_DATA=1; shift ;;
        --picture) (($# >= 2)) || { usage >&2; exit 2; }; PICTURE=$2; shift 2 ;;
        *) echo "demo.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

if [[ -t 1 ]]; then
    B=$'\e[1m' G=$'\e[32m' R=$'\e[31m' N=$'\e[0m'
else
    B="" G="" R="" N=""
fi

DATA=$(mktemp -d "${TMPDIR:-/tmp}/benmo-demo.XXXXXX")

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # cluster.sh stop ends exactly the nodes it recorded in $DATA, nothing else.
    "$CLUSTER" --data "$DATA" stop >/dev/null 2>&1 || true
    # Kept after a failure (for its logs) or when asked; not after Ctrl-C.
    if ((!KEEP_DATA && (rc == 0 || rc == 130 || rc == 143))); then
        rm -rf "$DATA"
    else
        echo "(data dir and node logs kept in $DATA)" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'echo; echo "demo.sh: interrupted" >&2; exit 130' INT
trap 'echo "demo.sh: terminated" >&2; exit 143' TERM

say() { printf '\n%s%s%s\n' "$B" "$*" "$N"; }
info() { printf '  %s\n' "$*"; }
ok() { printf '  %sok%s %s\n' "$G" "$N" "$*"; }
fail() {
    printf '\n%sdemo.sh: FAILED: %s%s\n' "$R" "$*" "$N" >&2
    exit 1
}

cl() { "$CLUSTER" --data "$DATA" ${DELAY:+--delay "$DELAY"} "$@"; }
BIN=${BENMO_BIN:-$ROOT/target/release/benmo}

# A free-looking range of five ports on loopback.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
range_free() {
    local p
    for ((p = $1; p < $1 + 5; p++)); do port_free "$p" || return 1; done
}
if [[ -z $BASE_PORT ]]; then
    for ((try = 0; try < 50; try++)); do
        BASE_PORT=$((20000 + (RANDOM % 2000) * 10))
        range_free "$BASE_PORT" && break
        BASE_PORT=""
    done
    [[ -n $BASE_PORT ]] || fail "found no free range of five ports"
fi
[[ $BASE_PORT =~ ^[0-9]+$ ]] || fail "bad --base-port '$BASE_PORT'"

ALL=(0 1 2 3 4)

# Queues a transfer at its debit node; prints its txid.
transfer() {
    local debit=$1 credit=$2 amount=$3 reply line
    # ask fails on a refusal too; then the reply holds the node's error line.
    reply=$(cl ask "$debit" moneyTransfer "$debit" "$credit" "$amount") || [[ $reply == *error:* ]] ||
        fail "node $debit did not take moneyTransfer $debit $credit $amount"
    line=$(grep -m1 -E "^queued [0-9]+\.[0-9]+ $debit $credit $amount\$" <<<"$reply") ||
        fail "node $debit did not queue moneyTransfer $debit $credit $amount; it said: $(grep -m1 '^error' <<<"$reply" || echo "$reply")"
    echo "${line#queued }" | cut -d' ' -f1
}

log_of() { echo "$DATA/node$1.log"; }

# How many times node $1 printed `committed $2 ...` in its log.
committed_lines() { grep -c -E "^committed ${2//./\\.} " "$(log_of "$1")" || true; }

# Waits up to $3 seconds for node $1 (the origin) to print `committed $2`.
await_commit() {
    local id=$1 tx=$2 deadline=$((SECONDS + $3))
    while ((SECONDS < deadline)); do
        if (($(committed_lines "$id" "$tx") > 0)); then
            info "node $id: $(grep -m1 -E "^committed ${tx//./\\.} " "$(log_of "$id")")"
            return 0
        fi
        sleep 0.1
    done
    fail "transfer $tx queued at node $id did not commit within $3 s"
}

status_line() {
    local out
    out=$(cl ask "$1" status) || fail "node $1 did not answer status"
    grep -m1 -E "^node $1 depth " <<<"$out" || fail "node $1 gave no status line"
}
field() { awk -v k="$2" '{ for (i = 1; i < NF; i++) if ($i == k) { print $(i + 1); exit } }' <<<"$1"; }

# "0=95 1=90 ..." as node $1 knows the accounts.
balances() {
    local out
    out=$(cl ask "$1" printBalances) || fail "node $1 did not answer printBalances"
    awk '$1 == "balance" { print $2, $3 }' <<<"$out" | sort -n |
        awk '{ printf "%s%s=%s", sep, $1, $2; sep = " " }'
}

# Prints depth, head and balances of each node given, and checks they agree
# (and, if $EXPECT is set, that the balances are those).
agree() {
    local id st d h b first_d="" first_h="" first_b=""
    for id in "$@"; do
        st=$(status_line "$id")
        d=$(field "$st" depth)
        h=$(field "$st" head)
        b=$(balances "$id")
        [[ -n $b ]] || fail "node $id printed no balances"
        info "node $id: depth $d, head ${h:0:12}, balances $b"
        if [[ -z $first_d ]]; then
            first_d=$d first_h=$h first_b=$b
        else
            [[ $d == "$first_d" && $h == "$first_h" ]] || fail "node $id is at depth $d head $h, node $1 at depth $first_d head $first_h"
            [[ $b == "$first_b" ]] || fail "node $id has balances '$b', node $1 has '$first_b'"
        fi
    done
    if [[ -n ${EXPECT:-} ]]; then
        [[ $first_b == "$EXPECT" ]] || fail "balances are '$first_b', expected '$EXPECT'"
    fi
    DEPTH=$first_d
}

converge() {
    local out
    out=$(cl wait "$@" 2>&1) || fail "the nodes did not converge: $out"
}

# How many times txid $2 appears in node $1's printBlockchain.
in_chain() {
    local out
    out=$(cl ask "$1" printBlockchain) || fail "node $1 did not answer printBlockchain"
    { grep -v -E '^(committed|queued) ' <<<"$out" | grep -o -w -F "$2" || true; } | wc -l
}

if [[ -z ${BENMO_BIN:-} ]]; then
    command -v cargo >/dev/null 2>&1 || fail "cargo is not installed (install Rust first)"
    info "building the release binary (cargo build --release; the first build"
    info "on a fresh machine takes a few minutes, later ones seconds) ..."
    (cd "$ROOT" && cargo build --release --quiet) || fail "cargo build --release failed"
    info "built in $SECONDS s"
fi
STARTED=$SECONDS # the tour's own time, after the build

# --------------------------------------------------------------------------
say "Benmo demo: five nodes on 127.0.0.1 ports $BASE_PORT-$((BASE_PORT + 4)), every account starting at 100"
info "data dir $DATA"
out=$(cl --base-port "$BASE_PORT" start 5 2>&1) || fail "could not start the cluster: $out"
info "${out##*$'\n'}"

# --------------------------------------------------------------------------
say "1. Transfers queued at five different nodes commit, and all nodes agree"
declare -A TX=()
for t in "0 1 10" "1 2 20" "2 3 30" "3 4 15" "4 0 5"; do
    read -r d c a <<<"$t"
    TX[$d]=$(transfer "$d" "$c" "$a")
    info "node $d queued transfer ${TX[$d]}: $a from account $d to account $c"
done
for d in "${ALL[@]}"; do await_commit "$d" "${TX[$d]}" 30; done
converge 30
EXPECT="0=95 1=90 2=90 3=115 4=110" agree "${ALL[@]}"
ok "all five nodes hold the same chain (depth $DEPTH) and the same balances"

# --------------------------------------------------------------------------
say "2. Node 4 crashes; the other four keep committing; node 4 restarts and catches up"
cl crash 4 >/dev/null || fail "node 4 did not exit on crashNode"
ok "node 4 exited (crashNode)"
TXA=$(transfer 0 4 7)
info "node 0 queued transfer $TXA: 7 from account 0 to account 4 (which is down)"
TXB=$(transfer 2 1 3)
info "node 2 queued transfer $TXB: 3 from account 2 to account 1"
await_commit 0 "$TXA" 30
await_commit 2 "$TXB" 30
converge 30 0 1 2 3
EXPECT="0=88 1=93 2=87 3=115 4=117" agree 0 1 2 3
ok "four nodes are enough to commit: they agree at depth $DEPTH"
before=$DEPTH
info "restarting node 4 from its own disk; no new transfers are sent"
cl restart 4 >/dev/null || fail "node 4 did not restart"
st=$(status_line 4)
info "node 4 restarted at depth $(field "$st" depth)"
converge 30
EXPECT="0=88 1=93 2=87 3=115 4=117" agree "${ALL[@]}"
((DEPTH == before)) || fail "depth moved from $before to $DEPTH without new transfers"
ok "node 4 caught up to depth $DEPTH by itself"

# --------------------------------------------------------------------------
say "3. A partition cuts nodes 3 and 4 off from nodes 0, 1 and 2"
# Runs `cluster.sh $1 A B` (sever or restore) on every link between {3,4} and {0,1,2}.
minority_links() {
    local a b
    for a in 3 4; do
        for b in 0 1 2; do cl "$1" "$a" "$b" >/dev/null || fail "could not $1 $a-$b"; done
    done
}
minority_links sever
ok "severed every link between {3,4} and {0,1,2}, on both sides"
TX3=$(transfer 3 0 12)
info "node 3 (minority) queued transfer $TX3: 12 from account 3 to account 0"
TX1=$(transfer 1 3 4)
info "node 1 (majority) queued transfer $TX1: 4 from account 1 to account 3"
await_commit 1 "$TX1" 30
# The depth the majority decided while cut off: the last word of `committed ... depth D`.
PART_DEPTH=$(grep -m1 -E "^committed ${TX1//./\\.} " "$(log_of 1)" | awk '{ print $NF }')
[[ $PART_DEPTH =~ ^[0-9]+$ ]] || fail "node 1 did not say at which depth $TX1 committed"
converge 30 0 1 2
EXPECT="0=88 1=89 2=87 3=119 4=117" agree 0 1 2
ok "the majority {0,1,2} committed at depth $DEPTH"
sleep 2
(($(committed_lines 3 "$TX3") == 0)) || fail "node 3 committed $TX3 while in the minority"
queue3=$(cl ask 3 printQueue)
grep -q -E "^queue ${TX3//./\\.} 3 0 12\$" <<<"$queue3" || fail "node 3's queue does not hold $TX3: $queue3"
for id in 0 1 2; do
    (($(in_chain "$id" "$TX3") == 0)) || fail "node $id's chain holds $TX3 while node 3 is cut off"
done
st=$(status_line 3)
info "node 3: depth $(field "$st" depth), queue $(field "$st" queue); printQueue: $(grep '^queue ' <<<"$queue3" | head -n 1)"
ok "transfer $TX3 is still only queued at node 3: a minority cannot commit"

say "   The partition heals"
minority_links restore
ok "restored every link"
await_commit 3 "$TX3" 30
converge 30
EXPECT="0=100 1=89 2=87 3=107 4=117" agree "${ALL[@]}"
n=$(committed_lines 3 "$TX3")
((n == 1)) || fail "node 3 printed 'committed $TX3' $n times"
for id in "${ALL[@]}"; do
    n=$(in_chain "$id" "$TX3")
    ((n == 1)) || fail "node $id's chain holds $TX3 $n times"
done
ok "every node converged at depth $DEPTH, and transfer $TX3 is in every chain exactly once"

# --------------------------------------------------------------------------
say "4. The audit checks every node's persisted chain"
cl stop >/dev/null
out=$(cl audit 2>&1) || fail "benmo audit: $out"
info "$out"
ok "audit passed"

# --------------------------------------------------------------------------
say "5. The round the majority decided during the partition, from the nodes' own traces"
if [[ -z $PICTURE ]]; then
    PICTURE="$(mktemp -d "${TMPDIR:-/tmp}/benmo-round.XXXXXX")/partition-round.svg"
fi
ladder=$("$BIN" trace --data "$DATA" --depth "$PART_DEPTH" --format text 2>&1) ||
    fail "benmo trace --depth $PART_DEPTH: $ladder"
info "How to read it: one column per node (n0..n4), time running down; each"
info "arrow is one message, its label on the right. A ballot R.N is round R of"
info "node N: a higher round wins, and the node number breaks ties, so no two"
info "nodes ever use the same ballot. 'prepare 1.0 from depth 1' is Multi-Paxos:"
info "a leader prepares once for every depth from its chain up, then runs only"
info "accept and accepted for each new depth, until a higher ballot appears."
info "So a later depth shows that one old prepare. On the lifelines: '/' a node"
info "severing a link (a severed link carries nothing), 'X' a crash, 'T' an"
info "election that timed out (nodes 3 and 4 have no majority), '!' the moment"
info "the value was chosen (a majority accepted it), '*' the moment each node"
info "learned it and committed. 'x' ends a message that never arrived."
echo
printf '%s\n' "$ladder"
out=$("$BIN" trace --data "$DATA" --depth "$PART_DEPTH" --out "$PICTURE" 2>&1) ||
    fail "benmo trace --depth $PART_DEPTH --out $PICTURE: $out"
[[ -s $PICTURE ]] || fail "benmo trace wrote nothing to $PICTURE"
ok "the round that decided depth $PART_DEPTH, drawn as an SVG: $PICTURE"

say "Done in $((SECONDS - STARTED)) s: consensus, crash recovery, partition safety and the audit all held."
