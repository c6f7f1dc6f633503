#!/usr/bin/env bash
# A small manager for a local Benmo cluster: one background `benmo node` per
# node, each reading its commands from a FIFO and writing to a log, all kept
# in the data dir next to the nodes' state.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
    cat <<EOF
usage: scripts/cluster.sh [FLAGS] SUBCOMMAND [ARGS]

Runs a Benmo cluster on this machine (loopback only), in the background.

subcommands:
  start [N]             build the release binary if needed, initialise a fresh
                        data dir (benmo init --force; not with --keep) and start
                        N nodes (default 5, or every node of cluster.conf with
                        --keep); returns once every node answers status
  send ID COMMAND...    write one command line to node ID's stdin
  ask ID COMMAND...     send a command and print the node's reply lines (within
                        10 s); exit 1 if the reply holds an 'error:' line. A
                        bare moneyTransfer/severLink/restoreLink is refused:
                        the node would read the next lines as its arguments
  crash ID              send crashNode to node ID and wait until it has exited
  kill ID               kill -9 node ID (by its recorded pid)
  restart ID            start node ID again on the same data
  sever A B             cut the link between nodes A and B (both sides);
                        prints e.g. 'severed 3-0'
  restore A B           restore the link between nodes A and B (both sides);
                        prints e.g. 'restored 3-0'
  wait [SECONDS] [ID...]
                        wait (default 30 s) until the running nodes (or the
                        given ones) all report the same depth and head and no
                        queued transfers; non-zero on timeout, naming laggards.
                        It asks for status again only after a commit or 5 s
  status                one line per node: running/stopped, pid, status line
  logs ID               print node ID's log
  logs -f [ID...]       follow every node's log (or the given ones) merged,
                        each line prefixed with its node ('node3 | ...'),
                        until Ctrl-C
  audit                 run benmo audit on the data dir
  stop                  end the nodes this script started, and nothing else

flags (anywhere before or after the subcommand; after 'send ID' or 'ask ID'
everything is the command):
  --data DIR            data dir (default: $ROOT/data)
  --base-port P         first port for 'start': node i listens on P+i
                        (default 7100)
  --keep                'start' reuses the existing data dir, not wiping it
  --delay MIN..MAX      random wait before a node runs for leader (20s..60s)
  --verbose             pass --verbose to each node started
  --classroom           pass --classroom to each node started (by-hand pace)
  --phase-delay D       pass --phase-delay D (e.g. 2s) to each node; needs
                        --classroom
  -h, --help            this text

Exit status: 0 done; 1 refused or failed (the reason on stderr); 2 usage error
(one line and a pointer to --help; nothing was changed).

State (all in the data dir): node<i>.pid, node<i>.fifo (the node's stdin),
node<i>.log (its stdout and stderr).  The binary is target/release/benmo, or
\$BENMO_BIN if set (then nothing is built).
EOF
}

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

# A usage error: one line and a pointer to --help on stderr, exit 2 (as benmo does).
# Nothing has been changed when it is called.
usage_error() {
    echo "cluster.sh: error: $*" >&2
    echo "try 'scripts/cluster.sh --help'" >&2
    exit 2
}

FLAGS=(--data --base-port --keep --delay --verbose --classroom --phase-delay --help)
SUBCOMMANDS=(start send ask crash kill restart sever restore wait status logs audit stop)

# " (did you mean X?)" for an X of $2... with the letters of $1 (a transposition), else
# for the first that begins like $1 and is about as long.
suggest() {
    local word=${1##*-} w bare diff
    shift
    letters() { grep -o . <<<"$1" | sort | tr -d '\n'; }
    for w in "$@"; do
        [[ $(letters "${w##*-}") == "$(letters "$word")" ]] && { echo " (did you mean $w?)"; return; }
    done
    for w in "$@"; do
        bare=${w##*-}
        diff=$((${#bare} - ${#word}))
        if ((${#word} >= 2 && diff * diff <= 4)) && [[ ${bare:0:2} == "${word:0:2}" ]]; then
            echo " (did you mean $w?)"
            return
        fi
    done
}

DIR="$ROOT/data"
BASE_PORT=7100
KEEP=0
DELAY=""
VERBOSE=0
CLASSROOM=0
PHASE_DELAY=""
ARGS=()

# Flags may come anywhere, except inside the command of `send ID ...`/`ask ID ...`.
while (($#)); do
    case $1 in
        -h | --help) usage; exit 0 ;;
        --data) (($# >= 2)) || usage_error "--data needs a directory"; DIR=$2; shift 2 ;;
        --data=*) DIR=${1#*=}; shift ;;
        --base-port) (($# >= 2)) || usage_error "--base-port needs a number"; BASE_PORT=$2; shift 2 ;;
        --base-port=*) BASE_PORT=${1#*=}; shift ;;
        --delay) (($# >= 2)) || usage_error "--delay needs MIN..MAX"; DELAY=$2; shift 2 ;;
        --delay=*) DELAY=${1#*=}; shift ;;
        --phase-delay) (($# >= 2)) || usage_error "--phase-delay needs a duration"; PHASE_DELAY=$2; shift 2 ;;
        --phase-delay=*) PHASE_DELAY=${1#*=}; shift ;;
        --keep) KEEP=1; shift ;;
        --verbose) VERBOSE=1; shift ;;
        --classroom) CLASSROOM=1; shift ;;
        --) shift; ARGS+=("$@"); break ;;
        -?*)
            # `logs -f` takes its own flag; anything else unknown is an error.
            if [[ ${ARGS[0]:-} == logs && ($1 == -f || $1 == --follow) ]]; then
                ARGS+=("$1")
                shift
                continue
            fi
            usage_error "unknown flag $1$(suggest "$1" "${FLAGS[@]}")"
            ;;
        *)
            ARGS+=("$1")
            shift
            if ((${#ARGS[@]} == 2)) && [[ ${ARGS[0]} == send || ${ARGS[0]} == ask ]]; then
                ARGS+=("$@")
                break
            fi
            ;;
    esac
done

# Milliseconds in a duration as benmo reads it (500ms, 2s or 20), or fails.
duration_ms() {
    [[ $1 =~ ^([0-9]{1,9})(ms|s)?$ ]] || return 1
    local n=$((10#${BASH_REMATCH[1]}))
    if [[ ${BASH_REMATCH[2]} == s ]]; then echo $((n * 1000)); else echo "$n"; fi
}

# Every flag and the subcommand are checked here, before anything is built, written
# or started; the node flags are checked once more by benmo itself (check_node_flags).
check_flags() {
    ((${#ARGS[@]})) || usage_error "no subcommand given"
    local sub=${ARGS[0]} s known=0 lo hi
    for s in "${SUBCOMMANDS[@]}"; do [[ $sub == "$s" ]] && known=1; done
    ((known)) || usage_error "unknown subcommand '$sub'$(suggest "$sub" "${SUBCOMMANDS[@]}")"
    [[ -n $DIR ]] || usage_error "--data needs a directory"
    if ! [[ $BASE_PORT =~ ^[0-9]{1,5}$ ]] || ((10#$BASE_PORT < 1 || 10#$BASE_PORT > 65535)); then
        usage_error "--base-port: expected a port number 1..65535, not '$BASE_PORT'"
    fi
    BASE_PORT=$((10#$BASE_PORT))
    if [[ -n $DELAY ]]; then
        local bad="--delay: expected MIN..MAX such as 20ms..100ms or 20s..60s, not '$DELAY'"
        [[ $DELAY == *..* ]] || usage_error "$bad"
        lo=$(duration_ms "${DELAY%%..*}") || usage_error "$bad"
        hi=$(duration_ms "${DELAY#*..}") || usage_error "$bad"
        ((lo <= hi)) || usage_error "$bad"
        ((hi - lo >= 10)) || usage_error "--delay: MAX must exceed MIN by at least 10ms, not '$DELAY'"
    fi
    if [[ -n $PHASE_DELAY ]]; then
        ((CLASSROOM)) || usage_error "--phase-delay needs --classroom"
        duration_ms "$PHASE_DELAY" >/dev/null ||
            usage_error "--phase-delay: expected a duration such as 2s or 500ms, not '$PHASE_DELAY'"
    fi
}
check_flags
[[ $DIR == /* ]] || DIR="$PWD/$DIR"
DIR=${DIR%/}

BIN=${BENMO_BIN:-$ROOT/target/release/benmo}

build() {
    if [[ -n ${BENMO_BIN:-} ]]; then
        [[ -x $BIN ]] || die "BENMO_BIN=$BIN is not an executable"
        return
    fi
    if command -v cargo >/dev/null 2>&1; then
        (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
    fi
    [[ -x $BIN ]] || die "no binary at $BIN (is cargo installed?)"
}

# The node flags, as start_node passes them.
node_flags() {
    NODE_FLAGS=()
    [[ -n $DELAY ]] && NODE_FLAGS+=(--delay "$DELAY")
    ((VERBOSE)) && NODE_FLAGS+=(--verbose)
    ((CLASSROOM)) && NODE_FLAGS+=(--classroom)
    [[ -n $PHASE_DELAY ]] && NODE_FLAGS+=(--phase-delay "$PHASE_DELAY")
    return 0
}

# Lets benmo itself judge the node flags before any node dir is touched: a node pointed
# at an empty temp dir parses its flags (exit 2 on a usage error) and then stops, finding
# no cluster there.
check_node_flags() {
    local tmp rc=0 out
    node_flags
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/cluster-sh.XXXXXX")
    out=$("$BIN" node 0 --data "$tmp/none" "${NODE_FLAGS[@]}" </dev/null 2>&1) || rc=$?
    rm -rf "$tmp"
    if ((rc == 2)); then
        out=${out%%$'\n'*}
        usage_error "${out#error: }"
    fi
}

need_bin() {
    [[ -x $BIN ]] || die "no binary at $BIN: run 'scripts/cluster.sh start' or 'cargo build --release' first"
}

conf() { echo "$DIR/cluster.conf"; }
pidf() { echo "$DIR/node$1.pid"; }
fifof() { echo "$DIR/node$1.fifo"; }
logf() { echo "$DIR/node$1.log"; }

# The node ids of cluster.conf, one per line.
node_ids() {
    [[ -f $(conf) ]] || die "no cluster in $DIR (no cluster.conf): run 'scripts/cluster.sh start' first"
    awk '$1 == "node" && $2 ~ /^[0-9]+$/ { print $2 }' "$(conf)"
}

node_port() {
    awk -v id="$1" '$1 == "node" && $2 == id { n = split($3, a, ":"); print a[n] }' "$(conf)"
}

check_id() {
    [[ $1 =~ ^[0-9]+$ ]] || usage_error "bad node id '$1'"
    local ids
    ids=$(node_ids)
    grep -qx "$1" <<<"$ids" || usage_error "no node $1 in $(conf)"
}

# Prints the recorded pid of node $1 if that process is alive and is really
# that node (same node id and data dir), so a recycled pid is never touched.
live_pid() {
    local pid cmdline
    [[ -f $(pidf "$1") ]] || return 1
    pid=$(<"$(pidf "$1")")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *" node $1 --data $DIR "* ]] || return 1
    echo "$pid"
}

running() { live_pid "$1" >/dev/null; }

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Writes one line to node $1's stdin. The FIFO is opened read-write, which
# never blocks; the caller checks that the node is running first.
send_line() {
    local fd
    exec {fd}<>"$(fifof "$1")"
    printf '%s\n' "$2" >&"$fd"
    exec {fd}>&-
}

send_to() {
    running "$1" || die "node $1 is not running"
    send_line "$1" "$2"
}

log_size() {
    if [[ -f $(logf "$1") ]]; then stat -c %s "$(logf "$1")"; else echo 0; fi
}

status_re() { echo "^node $1 depth [0-9]+ "; }

# After byte offset $2 of node $1's log, prints the lines up to (not including)
# the $3-th status line of the node, then that status line prefixed by '@@ '.
# Fails if that many status lines are not there yet.
reply_after() {
    tail -c +"$(($2 + 1))" "$(logf "$1")" 2>/dev/null | awk -v re="$(status_re "$1")" -v want="$3" '
        $0 ~ re { if (++seen == want) { print "@@ " $0; found = 1; exit } }
        { print }
        END { exit !found }'
}

# Sends `status` to each node given and fills STATUS[id] with its first reply
# line (empty if the node gave none within $1 seconds).
declare -A STATUS=()
query_status() {
    local timeout=$1 id
    shift
    local -A off=()
    STATUS=()
    for id in "$@"; do
        off[$id]=$(log_size "$id")
        if running "$id"; then send_line "$id" status; fi
    done
    local deadline=$((SECONDS + timeout)) pending line
    while :; do
        pending=0
        for id in "$@"; do
            [[ -n ${STATUS[$id]:-} ]] && continue
            if line=$(tail -c +"$((off[$id] + 1))" "$(logf "$id")" 2>/dev/null |
                grep -m1 -E "$(status_re "$id")"); then
                STATUS[$id]=$line
            else
                pending=1
            fi
        done
        ((pending)) || return 0
        ((SECONDS < deadline)) || return 0
        sleep 0.05
    done
}

# Field $2 (depth, head, queue, ...) of status line $1.
field() {
    awk -v k="$2" '{ for (i = 1; i < NF; i++) if ($i == k) { print $(i + 1); exit } }' <<<"$1"
}

start_node() {
    local id=$1 pid fifo log
    fifo=$(fifof "$id")
    log=$(logf "$id")
    rm -f "$fifo"
    mkfifo "$fifo"
    node_flags
    local args=(node "$id" --data "$DIR" "${NODE_FLAGS[@]}")
    # stdin is the FIFO opened read-write: the node holds a writer itself, so it
    # never sees EOF, and writing to the FIFO never blocks while it runs.
    # setsid (when present) keeps terminal signals such as Ctrl-C away from it.
    if command -v setsid >/dev/null 2>&1; then
        setsid "$BIN" "${args[@]}" <>"$fifo" >>"$log" 2>&1 &
    else
        "$BIN" "${args[@]}" <>"$fifo" >>"$log" 2>&1 &
    fi
    pid=$!
    echo "$pid" >"$(pidf "$id")"
}

# Waits until each node given answers status; fails naming the first that
# does not (and prints the end of its log).
await_up() {
    local id deadline=$((SECONDS + 30))
    local todo=("$@") left
    while ((${#todo[@]})); do
        query_status 2 "${todo[@]}"
        left=()
        for id in "${todo[@]}"; do
            if [[ -z ${STATUS[$id]:-} ]]; then
                if ! running "$id"; then
                    echo "cluster.sh: node $id exited while starting; end of $(logf "$id"):" >&2
                    tail -n 20 "$(logf "$id")" >&2 || true
                    return 1
                fi
                left+=("$id")
            fi
        done
        todo=("${left[@]}")
        if ((${#todo[@]})) && ((SECONDS >= deadline)); then
            echo "cluster.sh: node ${todo[0]} did not answer status within 30 s; end of its log:" >&2
            tail -n 20 "$(logf "${todo[0]}")" >&2 || true
            return 1
        fi
    done
}

# Ends node $1 if running: SIGTERM, then SIGKILL after 5 s.
stop_node() {
    local pid i
    if pid=$(live_pid "$1"); then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            running "$1" || break
            sleep 0.1
        done
        if live_pid "$1" >/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do
                running "$1" || break
                sleep 0.1
            done
        fi
        echo "stopped node $1 (pid $pid)"
    fi
    rm -f "$(pidf "$1")" "$(fifof "$1")"
}

await_exit() {
    local i
    for ((i = 0; i < 100; i++)); do
        running "$1" || return 0
        sleep 0.1
    done
    return 1
}

# Refuses, before anything is changed, if any node process (whoever started it)
# holds a node dir of $DIR: `benmo node` keeps node<i>/lock locked while it
# runs. Without flock(1), `benmo init` and `benmo node` still refuse by
# themselves, also before changing anything.
check_locks() {
    local f id pid rc
    command -v flock >/dev/null 2>&1 || return 0
    for f in "$DIR"/node*/lock; do
        [[ -f $f ]] || continue
        rc=0
        flock -n -s -E 75 "$f" true 2>/dev/null || rc=$?
        if ((rc == 75)); then
            id=${f%/lock}
            id=${id##*/node}
            pid=$(tr -dc 0-9 <"$f" 2>/dev/null || true)
            die "node $id of $DIR is running (pid ${pid:-unknown}); stop it first (nothing was changed)"
        fi
    done
}

# Refuses if a port is taken; arguments are pairs ID PORT. Nothing is changed.
check_ports() {
    local id port
    while (($# >= 2)); do
        id=$1
        port=$2
        shift 2
        port_in_use "$port" &&
            die "port $port (node $id) is already in use: another cluster? try --base-port (nothing was changed)"
    done
    return 0
}

cmd_start() {
    local n=${1:-} ids id port ports=()
    [[ -z $n || $n =~ ^[1-9][0-9]{0,3}$ ]] || usage_error "start: bad node count '$n'"
    ((${n:-5} % 2 == 1)) || usage_error "start: the node count must be odd, not $n"
    ((10#$BASE_PORT + ${n:-5} - 1 <= 65535)) || usage_error "--base-port $BASE_PORT leaves no room for $n nodes"
    if [[ -f $(conf) ]]; then
        for id in $(node_ids); do
            running "$id" && die "node $id of $DIR is already running (scripts/cluster.sh --data $DIR stop first)"
        done
    fi
    # Every check comes before the first change (init --force wipes the node dirs).
    check_locks
    if ((KEEP)); then
        [[ -f $(conf) ]] || die "--keep: no cluster.conf in $DIR"
        mapfile -t ids < <(node_ids)
        [[ -z $n || $n == "${#ids[@]}" ]] || die "--keep: $DIR has ${#ids[@]} nodes, not $n"
        for id in "${ids[@]}"; do
            port=$(node_port "$id")
            [[ -n $port ]] && ports+=("$id" "$port")
        done
    else
        for ((id = 0; id < ${n:-5}; id++)); do ports+=("$id" "$((BASE_PORT + id))"); done
    fi
    check_ports "${ports[@]}"
    build
    check_node_flags
    if ((!KEEP)); then
        n=${n:-5}
        mkdir -p "$DIR"
        local out
        if ! out=$("$BIN" init --nodes "$n" --data "$DIR" --host 127.0.0.1 --base-port "$BASE_PORT" --force 2>&1); then
            printf '%s\n' "$out" >&2
            die "benmo init failed"
        fi
        mapfile -t ids < <(node_ids)
        ((${#ids[@]} == n)) || die "benmo init wrote ${#ids[@]} nodes to $(conf), not $n"
        for id in "${ids[@]}"; do : >"$(logf "$id")"; done
    fi
    for id in "${ids[@]}"; do start_node "$id"; done
    if ! await_up "${ids[@]}"; then
        for id in "${ids[@]}"; do stop_node "$id" >/dev/null; done
        die "start failed; stopped the nodes"
    fi
    echo "started ${#ids[@]} nodes (data $DIR, ports $(node_port "${ids[0]}")-$(node_port "${ids[-1]}"), logs $DIR/node<i>.log)"
}

# The sizes of the given nodes' chain files: they change exactly when a block commits.
chain_sizes() {
    local id
    for id in "$@"; do stat -c %s "$DIR/node$id/chain.log" 2>/dev/null || echo -; done | tr '\n' ' '
}

cmd_wait() {
    local timeout=30 ids=() id
    # First number is the timeout; any further ones are node ids.
    if (($#)); then
        [[ $1 =~ ^[0-9]+$ ]] || usage_error "wait: bad timeout '$1' (seconds)"
        timeout=$1
        shift
    fi
    for id in "$@"; do check_id "$id"; done
    local want=("$@")
    ((${#want[@]})) || mapfile -t want < <(node_ids)
    local deadline=$((SECONDS + timeout)) problems sig="" polled=-100
    while :; do
        # Every status poll is a line in the node's log: ask again only once a chain has
        # grown (a commit, which may empty a queue) or 5 s have passed, not every tick.
        if [[ $(chain_sizes "${want[@]}") == "$sig" ]] && ((SECONDS - polled < 5)); then
            if ((SECONDS >= deadline)); then
                echo "cluster.sh: wait: not converged after ${timeout}s:" >&2
                printf '  %s\n' "${problems[@]}" >&2
                return 1
            fi
            sleep 0.2
            continue
        fi
        sig=$(chain_sizes "${want[@]}")
        polled=$SECONDS
        ids=()
        for id in "${want[@]}"; do running "$id" && ids+=("$id"); done
        ((${#ids[@]})) || die "wait: no running node"
        query_status 3 "${ids[@]}"
        problems=()
        local max=-1 head="" d q h heads_differ=0
        for id in "${ids[@]}"; do
            [[ -n ${STATUS[$id]:-} ]] || continue
            d=$(field "${STATUS[$id]}" depth)
            ((d > max)) && max=$d
        done
        for id in "${ids[@]}"; do
            if [[ -z ${STATUS[$id]:-} ]]; then
                problems+=("node $id does not answer status")
                continue
            fi
            d=$(field "${STATUS[$id]}" depth)
            q=$(field "${STATUS[$id]}" queue)
            h=$(field "${STATUS[$id]}" head)
            ((d < max)) && problems+=("node $id is at depth $d (others at $max)")
            [[ $q == 0 ]] || problems+=("node $id has $q queued transfer(s)")
            if ((d == max)); then
                if [[ -z $head ]]; then head=$h; elif [[ $h != "$head" ]]; then heads_differ=1; fi
            fi
        done
        ((heads_differ)) && problems+=("nodes at depth $max have different heads")
        if ((${#problems[@]} == 0)); then
            echo "converged: nodes ${ids[*]} at depth $max, head $head, no queued transfers"
            return 0
        fi
        if ((SECONDS >= deadline)); then
            echo "cluster.sh: wait: not converged after ${timeout}s:" >&2
            printf '  %s\n' "${problems[@]}" >&2
            return 1
        fi
        sleep 0.2
    done
}

# The commands that, typed alone, make the node read its next input lines as their
# arguments: `ask` refuses them, as its follow-up `status` would be read as one.
bare_usage() {
    case ${1,,} in
        moneytransfer) echo "moneyTransfer DEBIT CREDIT AMOUNT" ;;
        severlink) echo "severLink ID" ;;
        restorelink) echo "restoreLink ID" ;;
        *) return 1 ;;
    esac
}

# Sends a command, then `status` as the end marker, and prints the node's reply: the
# lines before that status line. Fails if the reply holds an `error:` line. A command
# that ended the node (crashNode, quit) is answered by its exit.
cmd_ask() {
    local id=$1 off reply i nstat=1 resent=0 errors_at=-1
    shift
    local cmd="$*" verb=${1,,}
    [[ $verb == status ]] && nstat=2
    running "$id" || die "node $id is not running"
    off=$(log_size "$id")
    send_line "$id" "$cmd"
    send_line "$id" status
    for ((i = 0; i < 200; i++)); do
        if reply=$(reply_after "$id" "$off" "$nstat"); then
            print_reply "$(sed '/^@@ /d' <<<"$reply")"
            return
        fi
        if ! running "$id"; then
            reply=$(reply_after "$id" "$off" 1000 || true)
            [[ -n $reply ]] && printf '%s\n' "$reply"
            [[ $verb == crashnode || $verb == quit || $verb == exit ]] && return 0
            die "node $id exited"
        fi
        # An error before any status line may mean the node read our status as an
        # answer to a prompt: ask once more rather than wait for nothing.
        if ((!resent)) && grep -q '^error:' <<<"$reply"; then
            ((errors_at >= 0)) || errors_at=$i
            if ((i - errors_at >= 10)); then
                send_line "$id" status
                resent=1
            fi
        fi
        sleep 0.05
    done
    if [[ -n $reply ]]; then
        echo "cluster.sh: node $id gave no status line after its reply within 10 s" >&2
        print_reply "$reply"
        return 1
    fi
    die "node $id did not answer within 10 s"
}

# Prints a reply; fails if it holds an `error:` line, so callers can rely on $?.
print_reply() {
    [[ -n $1 ]] && printf '%s\n' "$1"
    ! grep -q '^error:' <<<"$1"
}

# Sends severLink/restoreLink ($1) at both ends of the link $2-$3 and says
# what changed.
cmd_link() {
    local verb=$1 a=$2 b=$3 done=() reply side x y
    for side in "$a $b" "$b $a"; do
        read -r x y <<<"$side"
        if ! running "$x"; then
            echo "cluster.sh: node $x is not running; its side of the link is unchanged" >&2
        elif reply=$(cmd_ask "$x" "$verb" "$y"); then
            done+=("$x")
        else
            printf 'node %s: %s\n' "$x" "$reply" >&2
        fi
    done
    local word=severed
    [[ $verb == restoreLink ]] && word=restored
    case ${#done[@]} in
        2) echo "$word $a-$b" ;;
        1) echo "$word $a-$b at node ${done[0]} only"; return 1 ;;
        *) return 1 ;;
    esac
}

# Prefixes each line of tail -v output with its node, padded to $1 columns.
# A bash loop rather than awk: mawk buffers a pipe and would hold lines back.
prefix_lines() {
    local width=$1 line name=node blanks=0
    while IFS= read -r line; do
        if [[ $line =~ ^==\>\ .*node([0-9]+)\.log\ \<==$ ]]; then
            printf -v name '%-*s' "$width" "node${BASH_REMATCH[1]}"
            blanks=0 # tail's blank line before a header is not the log's
        elif [[ -z $line ]]; then
            blanks=$((blanks + 1))
        else
            for (( ; blanks > 0; blanks--)); do printf '%s |\n' "$name"; done
            printf '%s | %s\n' "$name" "$line"
        fi
    done
}

# Follows the logs of nodes $@ (default all), each line prefixed with its node,
# until interrupted. Ends exactly the tail and awk it started.
FOLLOW_PIDS=()
cmd_follow() {
    local ids=("$@") files=() id fd width=5
    ((${#ids[@]})) || mapfile -t ids < <(node_ids)
    for id in "${ids[@]}"; do
        files+=("$(logf "$id")")
        ((${#id} + 4 > width)) && width=$((${#id} + 4))
    done
    # tail -v names each file in a '==> FILE <==' header when it switches files.
    exec {fd}< <(exec tail -v -n +1 -F -- "${files[@]}" 2>/dev/null)
    FOLLOW_PIDS+=("$!")
    prefix_lines "$width" <&"$fd" &
    FOLLOW_PIDS+=("$!")
    exec {fd}<&-
    trap 'kill "${FOLLOW_PIDS[@]}" 2>/dev/null; exit 0' INT TERM
    wait "${FOLLOW_PIDS[-1]}" || true
    kill "${FOLLOW_PIDS[@]}" 2>/dev/null || true
}

cmd_status() {
    local id pid ids
    mapfile -t ids < <(node_ids)
    local up=()
    for id in "${ids[@]}"; do running "$id" && up+=("$id"); done
    ((${#up[@]})) && query_status 3 "${up[@]}"
    for id in "${ids[@]}"; do
        if pid=$(live_pid "$id"); then
            echo "node$id running pid $pid: ${STATUS[$id]:-(no answer to status)}"
        else
            echo "node$id stopped"
        fi
    done
}

sub=${ARGS[0]}
set -- "${ARGS[@]:1}"
case $sub in
    start)
        (($# <= 1)) || usage_error "usage: start [N]"
        cmd_start "${1:-}"
        ;;
    send)
        (($# >= 2)) || usage_error "usage: send ID COMMAND..."
        check_id "$1"
        id=$1
        shift
        send_to "$id" "$*"
        ;;
    ask)
        (($# >= 2)) || usage_error "usage: ask ID COMMAND..."
        check_id "$1"
        if (($# == 2)) && usage=$(bare_usage "$2"); then
            usage_error "ask: $2 needs its arguments: ask $1 $usage"
        fi
        cmd_ask "$@"
        ;;
    crash)
        (($# == 1)) || usage_error "usage: crash ID"
        check_id "$1"
        send_to "$1" crashNode
        await_exit "$1" || die "node $1 still runs 10 s after crashNode"
        rm -f "$(pidf "$1")"
        echo "node $1 crashed"
        ;;
    kill)
        (($# == 1)) || usage_error "usage: kill ID"
        check_id "$1"
        pid=$(live_pid "$1") || die "node $1 is not running"
        kill -KILL "$pid"
        await_exit "$1" || die "node $1 (pid $pid) survived kill -9"
        rm -f "$(pidf "$1")"
        echo "killed node $1 (pid $pid)"
        ;;
    restart)
        (($# == 1)) || usage_error "usage: restart ID"
        check_id "$1"
        running "$1" && die "node $1 is running"
        need_bin
        check_node_flags
        port=$(node_port "$1")
        [[ -n $port ]] && port_in_use "$port" && die "port $port of node $1 is in use"
        start_node "$1"
        await_up "$1" || die "node $1 did not come up"
        echo "restarted node $1 (pid $(<"$(pidf "$1")"))"
        ;;
    sever | restore)
        (($# == 2)) || usage_error "usage: $sub A B"
        check_id "$1"
        check_id "$2"
        [[ $1 != "$2" ]] || usage_error "$sub: A and B must differ"
        verb=severLink
        [[ $sub == restore ]] && verb=restoreLink
        cmd_link "$verb" "$1" "$2"
        ;;
    wait)
        cmd_wait "$@"
        ;;
    status)
        (($# == 0)) || usage_error "usage: status"
        cmd_status
        ;;
    logs)
        if [[ ${1:-} == -f || ${1:-} == --follow ]]; then
            shift
            for id in "$@"; do check_id "$id"; done
            cmd_follow "$@"
            exit 0
        fi
        (($# == 1)) || usage_error "usage: logs ID, or logs -f [ID...]"
        check_id "$1"
        cat "$(logf "$1")"
        ;;
    audit)
        (($# == 0)) || usage_error "usage: audit"
        need_bin
        exec "$BIN" audit --data "$DIR"
        ;;
    stop)
        (($# == 0)) || usage_error "usage: stop"
        # Exactly the nodes whose pid files this script wrote.
        shopt -s nullglob
        for f in "$DIR"/node*.pid; do
            id=${f##*/node}
            id=${id%.pid}
            [[ $id =~ ^[0-9]+$ ]] && stop_node "$id"
        done
        rm -f "$DIR"/node*.fifo
        ;;
    *)
        usage_error "unknown subcommand '$sub'"
        ;;
esac
