#!/usr/bin/env bash
# One tmux window, one pane per node, each pane running `benmo node i` with
# the pane as its terminal, so a person types commands to each node.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
    cat <<EOF
usage: scripts/terminals.sh [--fresh] [--data DIR] [--nodes N] [--base-port P]
                            [--delay MIN..MAX] [--verbose] [--classroom]
                            [--phase-delay D] [--session NAME] [--no-attach]

Opens a tmux session with one window of N tiled panes (default 5), each
running 'benmo node i' in the foreground: type commands (help, moneyTransfer,
printBalances, status, crashNode, ...) into a pane and that node runs them.
When a node exits (crashNode), press Enter in its pane to restart it.

  --fresh             initialise a fresh cluster (benmo init --force) even if
                      the data dir already holds one
  --data DIR          data dir (default: $ROOT/data); initialised if it holds
                      no cluster.conf yet
  --nodes N           nodes of a new cluster (default 5)
  --base-port P       first port of a new cluster (node i on P+i; default 7100)
  --delay MIN..MAX    random wait before a node runs for leader (e.g. 20s..60s)
  --verbose           every node prints each Paxos phase
  --classroom         every node runs at the slow, by-hand classroom pace
  --phase-delay D     pause D (e.g. 2s) between Paxos phases; needs --classroom
  --session NAME      tmux session name (default: benmo)
  --no-attach         create the session but do not attach to it
  -h, --help          this text

Needs tmux.  Binary: target/release/benmo (built if needed), or \$BENMO_BIN.
EOF
}

die() {
    echo "terminals.sh: $*" >&2
    exit 1
}

# A usage error: one line and a pointer to --help, exit 2; nothing has been changed.
usage_error() {
    echo "terminals.sh: error: $*" >&2
    echo "try 'scripts/terminals.sh --help'" >&2
    exit 2
}

DIR="$ROOT/data"
FRESH=0
NODES=5
BASE_PORT=7100
DELAY=""
NODE_FLAGS=()
SESSION=benmo
ATTACH=1
while (($#)); do
    case $1 in
        -h | --help) usage; exit 0 ;;
        --fresh) FRESH=1; shift ;;
        --data) (($# >= 2)) || usage_error "--data needs a directory"; DIR=$2; shift 2 ;;
        --nodes) (($# >= 2)) || usage_error "--nodes needs a number"; NODES=$2; shift 2 ;;
        --base-port) (($# >= 2)) || usage_error "--base-port needs a number"; BASE_PORT=$2; shift 2 ;;
        --delay) (($# >= 2)) || usage_error "--delay needs MIN..MAX"; DELAY=$2; shift 2 ;;
        --delay=*) DELAY=${1#*=}; shift ;;
        --verbose | --classroom) NODE_FLAGS+=("$1"); shift ;;
        --phase-delay) (($# >= 2)) || usage_error "--phase-delay needs a duration"; NODE_FLAGS+=("$1" "$2"); shift 2 ;;
        --phase-delay=*) NODE_FLAGS+=(--phase-delay "${1#*=}"); shift ;;
        --session) (($# >= 2)) || usage_error "--session needs a name"; SESSION=$2; shift 2 ;;
        --no-attach) ATTACH=0; shift ;;
        *) usage_error "unknown argument '$1'" ;;
    esac
done
if ! [[ $NODES =~ ^[1-9][0-9]{0,3}$ ]] || ((NODES % 2 == 0)); then
    usage_error "--nodes: expected an odd number, not '$NODES'"
fi
if ! [[ $BASE_PORT =~ ^[0-9]{1,5}$ ]] || ((10#$BASE_PORT + NODES - 1 > 65535)); then
    usage_error "--base-port: expected a port that leaves room for $NODES nodes, not '$BASE_PORT'"
fi
[[ $SESSION =~ ^[A-Za-z0-9_-]+$ ]] || usage_error "bad --session '$SESSION' (letters, digits, _ and - only)"
[[ $DIR == /* ]] || DIR="$PWD/$DIR"
DIR=${DIR%/}

BIN=${BENMO_BIN:-$ROOT/target/release/benmo}
if [[ -z ${BENMO_BIN:-} ]] && command -v cargo >/dev/null 2>&1; then
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
fi
[[ -x $BIN ]] || die "no binary at $BIN"

# benmo itself judges the node flags, against an empty temp dir, before anything is
# initialised: it exits 2 on a usage error, else 1 as it finds no cluster there.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/terminals-sh.XXXXXX")
rc=0
out=$("$BIN" node 0 --data "$tmp/none" ${DELAY:+--delay "$DELAY"} "${NODE_FLAGS[@]}" </dev/null 2>&1) || rc=$?
rm -rf "$tmp"
if ((rc == 2)); then
    out=${out%%$'\n'*}
    usage_error "${out#error: }"
fi

if ! command -v tmux >/dev/null 2>&1; then
    cat >&2 <<EOF
terminals.sh: tmux is not installed (on Debian/Ubuntu: apt-get install tmux).
Without it, open $NODES terminals and run in terminal i:
    $ROOT/target/release/benmo node i --data $DIR
EOF
    exit 1
fi

tmux has-session -t "=$SESSION" 2>/dev/null &&
    die "tmux session '$SESSION' already exists: attach with 'tmux attach -t $SESSION', or end it with 'tmux kill-session -t $SESSION'"

# Nodes that scripts/cluster.sh runs in the background on this data dir.
shopt -s nullglob
for f in "$DIR"/node*.pid; do
    pid=$(<"$f")
    if [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] &&
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -F " --data $DIR "; then
        die "a background cluster runs on $DIR (pid $pid): stop it with 'scripts/cluster.sh --data $DIR stop'"
    fi
done
shopt -u nullglob

if ((FRESH)) || [[ ! -f $DIR/cluster.conf ]]; then
    mkdir -p "$DIR"
    init=(init --nodes "$NODES" --data "$DIR" --host 127.0.0.1 --base-port "$BASE_PORT")
    ((FRESH)) && init+=(--force)
    "$BIN" "${init[@]}" || die "benmo init failed"
fi
mapfile -t IDS < <(awk '$1 == "node" && $2 ~ /^[0-9]+$/ { print $2 }' "$DIR/cluster.conf")
((${#IDS[@]})) || die "no nodes in $DIR/cluster.conf"

# A node's pane: the node in the foreground, and a restart prompt when it exits.
pane_cmd() {
    local id=$1 node
    node=$(printf '%q ' "$BIN" node "$id" --data "$DIR" ${DELAY:+--delay "$DELAY"} "${NODE_FLAGS[@]}")
    printf 'while :; do %s; echo; read -r -p %q || break; done' \
        "$node" "node $id stopped: press Enter to start it again, Ctrl-D to close this pane "
}

WIN="$SESSION:nodes"
tmux new-session -d -s "$SESSION" -n nodes -x 220 -y 60 -c "$ROOT" "bash -c $(printf '%q' "$(pane_cmd "${IDS[0]}")")"
tmux select-pane -t "$WIN" -T "node ${IDS[0]}"
for id in "${IDS[@]:1}"; do
    tmux split-window -t "$WIN" -c "$ROOT" "bash -c $(printf '%q' "$(pane_cmd "$id")")"
    tmux select-pane -t "$WIN" -T "node $id"
    tmux select-layout -t "$WIN" tiled >/dev/null
done
tmux set-option -w -t "$WIN" pane-border-status top >/dev/null 2>&1 || true
tmux set-option -w -t "$WIN" pane-border-format ' #{pane_title} ' >/dev/null 2>&1 || true
tmux select-pane -t "$WIN.0"

echo "tmux session '$SESSION': ${#IDS[@]} nodes on $DIR, one pane each (type 'help' in a pane)."
echo "Hint: to type the same command into every pane, press Ctrl-b then type ':setw synchronize-panes on' (and '... off' to stop)."

if ((ATTACH)); then
    if [[ -n ${TMUX:-} ]]; then
        exec tmux switch-client -t "$SESSION"
    elif [[ -t 0 && -t 1 ]]; then
        exec tmux attach -t "$SESSION"
    fi
fi
echo "Attach with: tmux attach -t $SESSION   (end it with: tmux kill-session -t $SESSION)"
