#!/usr/bin/env bash
# Causeway benchmark: `make bench` (or `bash bench/run.sh`) from the repo root.
#
# Method (shared/design/BENCHMARKING.md): load generator pinned on CPU 0,
# everything under test (upstream + proxies) pinned on CPU 1, every proxy
# single-threaded; configurations interleaved round-robin with a rotating
# start; medians over rounds; direct re-measured in the same run.
#
# Environment knobs:
#   BENCH_QUICK=1          smoke run (~2 min): 1 round, short tests
#   BENCH_ROUNDS=N         rounds (default 3; quick 1)
#   BENCH_CONFIGS="a b"    subset of: direct sidecar mesh nginx haproxy nginx-x2 haproxy-x2
#   BENCH_SKIP_SIDECAR=1   drop sidecar and mesh (when bin/sidecar does not build yet)
#   BENCH_CLOSED_DURATION, BENCH_OPEN1K_DURATION, BENCH_OPEN5K_DURATION, BENCH_WARMUP
#   BENCH_CLOSED_CONNS (50), BENCH_OPEN_CONNS (16), BENCH_SPIN (50us)
#   BENCH_PORT_BASE=19000  ports BASE..BASE+59 on 127.0.0.1 (the next free block of 100 if busy)
#   BENCH_QUIET_BUDGET=S   total seconds the run may wait, before tests, for other
#                          work on the shared machine to stop (default 60; quick 20)
#   BENCH_KEEP=1           keep the work dir (configs, logs) after the run
#   BENCH_NO_INSTALL=1     never run apt-get
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
RESULTS="$BENCH/results"
BIN="$ROOT/bin"
CMDLINE=${BENCH_CMDLINE:-"$(printf '%q ' "$0" "$@")"}
CMDLINE=${CMDLINE% }
for v in BENCH_QUICK BENCH_ROUNDS BENCH_CONFIGS BENCH_SKIP_SIDECAR; do
	[[ -n ${!v:-} ]] && CMDLINE="$v=${!v} $CMDLINE"
done

QUICK=${BENCH_QUICK:-0}
if [[ $QUICK == 1 ]]; then
	ROUNDS=${BENCH_ROUNDS:-1}
	CLOSED_DUR=${BENCH_CLOSED_DURATION:-3s}
	OPEN1K_DUR=${BENCH_OPEN1K_DURATION:-4s}
	OPEN5K_DUR=${BENCH_OPEN5K_DURATION:-3s}
	WARMUP=${BENCH_WARMUP:-500ms}
else
	ROUNDS=${BENCH_ROUNDS:-3}
	CLOSED_DUR=${BENCH_CLOSED_DURATION:-8s}
	OPEN1K_DUR=${BENCH_OPEN1K_DURATION:-10s}
	OPEN5K_DUR=${BENCH_OPEN5K_DURATION:-6s}
	WARMUP=${BENCH_WARMUP:-1s}
fi
QUIET_BUDGET=${BENCH_QUIET_BUDGET:-$([[ $QUICK == 1 ]] && echo 20 || echo 60)}
CLOSED_CONNS=${BENCH_CLOSED_CONNS:-50}
OPEN_CONNS=${BENCH_OPEN_CONNS:-16}
SPIN=${BENCH_SPIN:-50us}
B=${BENCH_PORT_BASE:-19000}
CPU_LG=0
CPU_SUT=1

ALL_CONFIGS="direct sidecar mesh nginx haproxy nginx-x2 haproxy-x2"
CONFIGS=${BENCH_CONFIGS:-$ALL_CONFIGS}
if [[ ${BENCH_SKIP_SIDECAR:-0} == 1 ]]; then
	CONFIGS=$(tr ' ' '\n' <<<"$CONFIGS" | grep -vxE 'sidecar|mesh' | tr '\n' ' ')
fi
read -r -a CONFIG_LIST <<<"$CONFIGS"
for c in "${CONFIG_LIST[@]}"; do
	[[ " $ALL_CONFIGS " == *" $c "* ]] || { echo "bench: unknown config '$c'" >&2; exit 2; }
done
[[ " ${CONFIG_LIST[*]} " == *" direct "* ]] || { echo "bench: 'direct' is required (baseline)" >&2; exit 2; }
need_sidecar=0
[[ " ${CONFIG_LIST[*]} " == *" sidecar "* || " ${CONFIG_LIST[*]} " == *" mesh "* ]] && need_sidecar=1
need_nginx=0; [[ " ${CONFIG_LIST[*]} " == *" nginx"* ]] && need_nginx=1
need_haproxy=0; [[ " ${CONFIG_LIST[*]} " == *" haproxy"* ]] && need_haproxy=1

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ $(nproc) -lt 2 ]]; then
	die "needs at least 2 CPUs (load generator on CPU $CPU_LG, system under test on CPU $CPU_SUT)"
fi
command -v taskset >/dev/null || die "taskset (util-linux) is required"

# ---------------------------------------------------------------- cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/causeway-bench.XXXXXX")
chmod 755 "$WORK" # nginx workers run as an unprivileged user
LG_PID=""  # the running load generator, if any
DESCENDANTS=() # "pid:starttime" of children of started processes (nginx workers)
PIDS=()   # every process this script started (nginx masters stop their own workers)
declare -A PROC_PIDS=() # name -> pid

cleanup() {
	local rc=$? pid i
	trap - EXIT INT TERM
	[[ -n ${LG_PID:-} ]] && { kill -TERM "$LG_PID" 2>/dev/null || true; }
	for pid in "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for i in $(seq 1 30); do # up to 3 s for a graceful stop
		local alive=0
		for pid in "${PIDS[@]}"; do
			kill -0 "$pid" 2>/dev/null && alive=1
		done
		((alive)) || break
		sleep 0.1
	done
	# (The sidecar drains for a few seconds on SIGTERM; no need to wait for that.)
	{
		for pid in "${PIDS[@]}"; do
			kill -KILL "$pid" 2>/dev/null || true
		done
		wait 2>/dev/null || true
	} 2>/dev/null
	# A child outlives its parent only if the parent died abnormally; kill it
	# if the PID still names the same process (same start time).
	local d
	for d in "${DESCENDANTS[@]}"; do
		[[ $(start_time "${d%%:*}") == "${d#*:}" ]] && { kill -KILL "${d%%:*}" 2>/dev/null || true; }
	done
	wait 2>/dev/null || true
	if [[ ${BENCH_KEEP:-0} == 1 || $rc -ne 0 ]]; then
		log "work dir kept: $WORK"
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- install and build
if ((need_nginx || need_haproxy)); then
	missing=()
	((need_nginx)) && ! command -v nginx >/dev/null && ! [[ -x /usr/sbin/nginx ]] && missing+=(nginx-light)
	((need_haproxy)) && ! command -v haproxy >/dev/null && ! [[ -x /usr/sbin/haproxy ]] && missing+=(haproxy)
	if ((${#missing[@]})); then
		[[ ${BENCH_NO_INSTALL:-0} == 1 ]] && die "missing ${missing[*]} and BENCH_NO_INSTALL=1"
		log "installing ${missing[*]} with apt-get"
		export DEBIAN_FRONTEND=noninteractive
		apt-get -o DPkg::Lock::Timeout=300 update -qq >"$WORK/apt.log" 2>&1 ||
			{ tail -5 "$WORK/apt.log" >&2; die "apt-get update failed"; }
		apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >>"$WORK/apt.log" 2>&1 ||
			{ tail -5 "$WORK/apt.log" >&2; die "apt-get install failed"; }
	fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

mkdir -p "$BIN" "$RESULTS"
cd "$ROOT"
log "building bin/loadgen bin/upstream"
go build -o "$BIN/loadgen" ./bench/loadgen
go build -o "$BIN/upstream" ./bench/upstream
go build -o "$WORK/report" ./bench/report
if ((need_sidecar)); then
	log "building bin/sidecar"
	if ! go build -o "$BIN/sidecar" ./cmd/sidecar 2>"$WORK/sidecar-build.log"; then
		cat "$WORK/sidecar-build.log" >&2
		die "bin/sidecar does not build; rerun with BENCH_SKIP_SIDECAR=1 to benchmark the other configs"
	fi
fi
LG="$BIN/loadgen"

# ---------------------------------------------------------------- helpers
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start NAME CMD...: run CMD pinned on the SUT CPU with GOMAXPROCS=1, logs in $WORK.
start() {
	local name=$1
	shift
	taskset -c "$CPU_SUT" env GOMAXPROCS=1 "$@" >"$WORK/$name.log" 2>&1 &
	PIDS+=($!)
	PROC_PIDS[$name]=$!
}

# children PID: direct children (nginx workers). /proc/PID/task/*/children is
# not available on every kernel, so scan /proc.
children() {
	local parent=$1 f line rest
	for f in /proc/[0-9]*/stat; do
		read -r line 2>/dev/null <"$f" || continue
		rest=${line##*) }      # fields after "(comm) "
		rest=${rest#* }        # drop state
		[[ ${rest%% *} == "$parent" ]] || continue
		f=${f#/proc/}
		echo "${f%/stat}"
	done
}

start_time() { # start_time PID: field 22 of /proc/PID/stat
	local line
	read -r line 2>/dev/null <"/proc/$1/stat" || return 0
	line=${line##*) }
	# shellcheck disable=SC2086
	set -- $line
	echo "${20}"
}

# pids_of NAME...: the named processes and their children.
pids_of() {
	local n p
	for n; do
		p=${PROC_PIDS[$n]}
		echo "$p"
		children "$p"
	done
}

# cpu_ns PID...: CPU time of all threads (schedstat, ns).
cpu_ns() {
	local t=0 p f v
	for p; do
		for f in /proc/"$p"/task/*/schedstat; do
			read -r v _ 2>/dev/null <"$f" || continue
			t=$((t + v))
		done
	done
	echo "$t"
}

status_kb() { # status_kb FIELD PID...
	local field=$1 t=0 p k v
	shift
	for p; do
		while read -r k v _; do
			[[ $k == "$field:" ]] && t=$((t + v))
		done 2>/dev/null <"/proc/$p/status" || true
	done
	echo "$t"
}

reset_hwm() {
	local p
	for p; do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done
}

# cpu_idle_ticks: "idle_lg idle_sut steal" from /proc/stat (USER_HZ ticks).
# Idle (+iowait) time is accounted exactly by the tickless kernel, whereas
# user/system are tick-sampled and unreliable for bursty loads, so the report
# derives busy = wall - idle. Used to spot foreign load on a shared machine.
cpu_idle_ticks() {
	local name i w st li=0 si=0 steal=0
	while read -r name _ _ _ i w _ _ st _; do
		[[ $name == "cpu$CPU_LG" || $name == "cpu$CPU_SUT" ]] || continue
		steal=$((steal + st))
		if [[ $name == "cpu$CPU_LG" ]]; then li=$((i + w)); else si=$((i + w)); fi
	done </proc/stat
	echo "$li $si $steal"
}

# quiet_gate: before a test, wait while other work keeps either pinned CPU more
# than 30 % busy (nothing of ours runs between tests), within a total budget.
QUIET_WAITED_US=0
quiet_gate() {
	local a b t0 t1 lb sb said=0
	while :; do
		read -r -a a <<<"$(cpu_idle_ticks)"
		t0=$EPOCHREALTIME
		sleep 0.3
		read -r -a b <<<"$(cpu_idle_ticks)"
		t1=$EPOCHREALTIME
		local ticks=$(((${t1/./} - ${t0/./}) * CLK_TCK / 1000000))
		((ticks > 0)) || return 0
		lb=$((100 - 100 * (b[0] - a[0]) / ticks))
		sb=$((100 - 100 * (b[1] - a[1]) / ticks))
		((lb <= 30 && sb <= 30)) && return 0
		QUIET_WAITED_US=$((QUIET_WAITED_US + ${t1/./} - ${t0/./}))
		if ((QUIET_WAITED_US >= QUIET_BUDGET * 1000000)); then
			((said)) && log "still busy; quiet-wait budget (${QUIET_BUDGET}s) used up, going on"
			return 0
		fi
		((said)) || log "other work keeps CPU0 ${lb}% / CPU1 ${sb}% busy; waiting for a quiet machine"
		said=1
	done
}

all_alive() {
	local p
	for p; do kill -0 "$p" 2>/dev/null || return 1; done
}

probe() { # probe URL [HOST] [EXPECT_BODY]
	taskset -c "$CPU_LG" "$LG" -mode probe -url "$1" -host "${2:-}" -expect-body "${3:-}" -timeout "${PROBE_TIMEOUT:-20s}"
}

# ---------------------------------------------------------------- ports
# The first free block of 60 ports from BENCH_PORT_BASE (stepping by 100), so a
# run never collides with another process listening on the machine.
range_free() {
	local p
	for p in 0 10 11 12 13 20 21 22 23 30 31 32 33 40 41 42 50 51 52; do
		port_busy $(($1 + p)) && return 1
	done
	return 0
}
for try in $(seq 0 9); do
	range_free $((B + 100 * try)) && break
	((try == 9)) && die "no free port block from 127.0.0.1:$B on (set BENCH_PORT_BASE)"
done
((try > 0)) && log "ports $B.. busy; using $((B + 100 * try)).."
B=$((B + 100 * try))
P_UP=$B
P_SC_IN=$((B + 10)) P_SC_OUT=$((B + 11)) P_SC_ADMIN=$((B + 12)) P_SC_HEALTH=$((B + 13))
P_A_IN=$((B + 20)) P_A_OUT=$((B + 21)) P_A_ADMIN=$((B + 22)) P_A_HEALTH=$((B + 23))
P_B_IN=$((B + 30)) P_B_OUT=$((B + 31)) P_B_ADMIN=$((B + 32)) P_B_HEALTH=$((B + 33))
P_NG=$((B + 40)) P_NG_A=$((B + 41)) P_NG_B=$((B + 42))
P_HA=$((B + 50)) P_HA_A=$((B + 51)) P_HA_B=$((B + 52))
UP="127.0.0.1:$P_UP"
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

# ---------------------------------------------------------------- configs of the peers
mk_nginx() { # NAME LISTEN_PORT UPSTREAM
	local d="$WORK/nginx-$1"
	mkdir -p "$d"
	cat >"$d/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $d/body;
    proxy_temp_path       $d/proxy;
    fastcgi_temp_path     $d/fcgi;
    uwsgi_temp_path       $d/uwsgi;
    scgi_temp_path        $d/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    upstream up {
        server $3;
        keepalive 256;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:$2;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}

mk_haproxy() { # NAME LISTEN_PORT UPSTREAM
	cat >"$WORK/haproxy-$1.cfg" <<EOF
global
    nbthread 1
    maxconn 8000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always
frontend fe
    bind 127.0.0.1:$2
    default_backend be
backend be
    server s1 $3
EOF
}

start_nginx() { # NAME LISTEN_PORT UPSTREAM
	mk_nginx "$@"
	local d="$WORK/nginx-$1"
	start "nginx-$1" "$NGINX" -p "$d/" -e "$d/error.log" -c "$d/nginx.conf"
}

start_haproxy() { # NAME LISTEN_PORT UPSTREAM
	mk_haproxy "$@"
	start "haproxy-$1" "$HAPROXY" -db -f "$WORK/haproxy-$1.cfg"
}

start_sidecar() { # NAME SERVICE APP IN OUT ADMIN HEALTH [--upstream ...]
	local name=$1 svc=$2 app=$3 in=$4 out=$5 admin=$6 health=$7
	shift 7
	start "$name" "$BIN/sidecar" --service "$svc" --node-id "bench-$name" \
		--app "$app" --app-protocol http1 \
		--inbound "127.0.0.1:$in" --outbound "127.0.0.1:$out" \
		--admin "127.0.0.1:$admin" --health "127.0.0.1:$health" \
		--gossip off --log-level warn "$@"
}

# Per config: URL, Host header, processes whose CPU/RSS count as "proxy".
declare -A C_URL C_HOST C_PROCS
C_URL[direct]="http://$UP/"; C_PROCS[direct]=""
C_URL[sidecar]="http://127.0.0.1:$P_SC_IN/"; C_PROCS[sidecar]="sidecar"
C_URL[mesh]="http://127.0.0.1:$P_A_OUT/"; C_HOST[mesh]="bench"; C_PROCS[mesh]="sidecar-a sidecar-b"
C_URL[nginx]="http://127.0.0.1:$P_NG/"; C_PROCS[nginx]="nginx-single"
C_URL[nginx-x2]="http://127.0.0.1:$P_NG_A/"; C_PROCS[nginx-x2]="nginx-hopA nginx-hopB"
C_URL[haproxy]="http://127.0.0.1:$P_HA/"; C_PROCS[haproxy]="haproxy-single"
C_URL[haproxy-x2]="http://127.0.0.1:$P_HA_A/"; C_PROCS[haproxy-x2]="haproxy-hopA haproxy-hopB"

# ---------------------------------------------------------------- start everything
log "work dir $WORK; configs: ${CONFIG_LIST[*]}; rounds $ROUNDS"
start upstream "$BIN/upstream" -listen "$UP"
probe "http://$UP/" "" "Hello, World!" || die "upstream did not come up: $(tail -5 "$WORK/upstream.log")"

has() { [[ " ${CONFIG_LIST[*]} " == *" $1 "* ]]; }
has sidecar && start_sidecar sidecar bench "$UP" $P_SC_IN $P_SC_OUT $P_SC_ADMIN $P_SC_HEALTH
if has mesh; then
	start_sidecar sidecar-b bench "$UP" $P_B_IN $P_B_OUT $P_B_ADMIN $P_B_HEALTH
	start_sidecar sidecar-a client "$UP" $P_A_IN $P_A_OUT $P_A_ADMIN $P_A_HEALTH \
		--upstream "bench=127.0.0.1:$P_B_IN"
fi
has nginx && start_nginx single $P_NG "$UP"
if has nginx-x2; then
	start_nginx hopB $P_NG_B "$UP"
	start_nginx hopA $P_NG_A "127.0.0.1:$P_NG_B"
fi
has haproxy && start_haproxy single $P_HA "$UP"
if has haproxy-x2; then
	start_haproxy hopB $P_HA_B "$UP"
	start_haproxy hopA $P_HA_A "127.0.0.1:$P_HA_B"
fi

for name in sidecar sidecar-a sidecar-b; do
	[[ -n ${PROC_PIDS[$name]:-} ]] || continue
	admin=$P_SC_ADMIN
	[[ $name == sidecar-a ]] && admin=$P_A_ADMIN
	[[ $name == sidecar-b ]] && admin=$P_B_ADMIN
	probe "http://127.0.0.1:$admin/ready" >/dev/null 2>"$WORK/probe.err" ||
		die "$name not ready on admin :$admin/ready: $(cat "$WORK/probe.err"); log: $(tail -20 "$WORK/$name.log")"
done
for c in "${CONFIG_LIST[@]}"; do
	probe "${C_URL[$c]}" "${C_HOST[$c]:-}" "Hello, World!" 2>"$WORK/probe.err" ||
		die "config $c does not serve the upstream's body: $(cat "$WORK/probe.err")"
done
log "all configs ready"

# Idle RSS right after start (after one probe request).
declare -A C_PIDS
IDLE_JSON=""
for c in "${CONFIG_LIST[@]}"; do
	# shellcheck disable=SC2086
	C_PIDS[$c]=$(pids_of ${C_PROCS[$c]} | tr '\n' ' ')
	for p in ${C_PIDS[$c]}; do
		[[ " ${PIDS[*]} " == *" $p "* ]] || DESCENDANTS+=("$p:$(start_time "$p")")
	done
	# shellcheck disable=SC2086
	IDLE_JSON+="${IDLE_JSON:+,}\"$c\":$(status_kb VmRSS ${C_PIDS[$c]})"
done
IDLE_JSON="{\"upstream\":$(status_kb VmRSS "${PROC_PIDS[upstream]}"),$IDLE_JSON}"

# ---------------------------------------------------------------- measurement
RAW="$WORK/raw.jsonl"
: >"$RAW"
declare -A DEAD=()

# run_test ROUND CONFIG TEST LOADGEN-ARGS...
run_test() {
	local round=$1 c=$2 test=$3
	shift 3
	local pids=${C_PIDS[$c]} up=${PROC_PIDS[upstream]} rec
	# shellcheck disable=SC2086
	if [[ -n ${DEAD[$c]:-} ]] || ! all_alive $pids "$up"; then
		DEAD[$c]=1
		log "round $round $c $test: skipped, a process of this config has exited"
		printf '{"round":%d,"config":"%s","test":"%s","dead":true}\n' "$round" "$c" "$test" >>"$RAW"
		return 0
	fi
	quiet_gate
	# shellcheck disable=SC2086
	reset_hwm $pids "$up"
	local t0=$EPOCHREALTIME p0 u0 p1 u1 t1 out c0 c1
	read -r -a c0 <<<"$(cpu_idle_ticks)"
	# shellcheck disable=SC2086
	p0=$(cpu_ns $pids)
	u0=$(cpu_ns "$up")
	# In the background + wait, so that a signal interrupts the test at once.
	taskset -c "$CPU_LG" "$LG" -url "${C_URL[$c]}" -host "${C_HOST[$c]:-}" "$@" >"$WORK/lg.out" 2>"$WORK/lg.err" &
	LG_PID=$!
	if wait "$LG_PID"; then out=$(<"$WORK/lg.out"); else out=""; fi
	LG_PID=""
	# shellcheck disable=SC2086
	p1=$(cpu_ns $pids)
	u1=$(cpu_ns "$up")
	t1=$EPOCHREALTIME
	read -r -a c1 <<<"$(cpu_idle_ticks)"
	local hwm uhwm
	# shellcheck disable=SC2086
	hwm=$(status_kb VmHWM $pids)
	uhwm=$(status_kb VmHWM "$up")
	# shellcheck disable=SC2086
	all_alive $pids "$up" || DEAD[$c]=1
	if [[ -z $out ]]; then
		log "round $round $c $test: loadgen failed: $(head -c 300 "$WORK/lg.err")"
		printf '{"round":%d,"config":"%s","test":"%s","loadgen_error":%s}\n' "$round" "$c" "$test" \
			"\"$(head -c 300 "$WORK/lg.err" | tr -d '"\\\n\r\t')\"" >>"$RAW"
		return 0
	fi
	rec=$(printf '{"round":%d,"config":"%s","test":"%s","wall_ns":%d,"proxy_cpu_ns":%d,"upstream_cpu_ns":%d,"proxy_hwm_kb":%d,"upstream_hwm_kb":%d,"lg_cpu_idle_ticks":%d,"sut_cpu_idle_ticks":%d,"steal_ticks":%d,"clk_tck":%d,"dead":%s,"lg":%s}' \
		"$round" "$c" "$test" "$(((${t1/./} - ${t0/./}) * 1000))" "$((p1 - p0))" "$((u1 - u0))" "$hwm" "$uhwm" \
		"$((c1[0] - c0[0]))" "$((c1[1] - c0[1]))" "$((c1[2] - c0[2]))" "$CLK_TCK" \
		"$([[ -n ${DEAD[$c]:-} ]] && echo true || echo false)" "$out")
	echo "$rec" >>"$RAW"
	"$WORK/report" -line <<<"$rec" >&2 || true
}

rotated() { # rotated OFFSET: CONFIG_LIST rotated left by OFFSET
	local n=${#CONFIG_LIST[@]} i
	for ((i = 0; i < n; i++)); do echo "${CONFIG_LIST[$(((i + $1) % n))]}"; done
}

OPEN_ARGS=(-conns "$OPEN_CONNS" -warmup "$WARMUP" -spin "$SPIN" -pacer timerfd)
# Phase 1: open-loop latency (and RSS at 1,000 rps before any saturating load).
for ((r = 1; r <= ROUNDS; r++)); do
	for c in $(rotated $((r - 1))); do
		run_test "$r" "$c" open1k -rate 1000 -duration "$OPEN1K_DUR" "${OPEN_ARGS[@]}"
		run_test "$r" "$c" open5k -rate 5000 -duration "$OPEN5K_DUR" "${OPEN_ARGS[@]}"
	done
done
# Phase 2: closed-loop throughput.
for ((r = 1; r <= ROUNDS; r++)); do
	for c in $(rotated $((r - 1))); do
		run_test "$r" "$c" closed -conns "$CLOSED_CONNS" -duration "$CLOSED_DUR" -warmup "$WARMUP"
	done
done

# ---------------------------------------------------------------- report
META="$WORK/meta.txt"
{
	echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "command=$CMDLINE"
	echo "commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (dirty)')"
	echo "nproc=$(nproc)"
	echo "cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
	echo "lscpu=$(lscpu 2>/dev/null | grep -E '^(CPU\(s\)|Thread\(s\) per core|Hypervisor vendor|L2 cache|L3 cache):' | sed 's/  */ /g' | paste -sd';' -)"
	echo "kernel=$(uname -r)"
	echo "go=$(go version | awk '{print $3}')"
	((need_nginx)) && echo "nginx=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
	((need_haproxy)) && echo "haproxy=$("$HAPROXY" -v 2>&1 | head -1 | awk '{print $3}')"
	echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
	echo "rounds=$ROUNDS"
	echo "quick=$QUICK"
	echo "closed=$CLOSED_CONNS conns, ${CLOSED_DUR} + ${WARMUP} warm-up"
	echo "open=$OPEN_CONNS conns, 1000 rps for ${OPEN1K_DUR}, 5000 rps for ${OPEN5K_DUR}, ${WARMUP} warm-up, timerfd pacer + ${SPIN} spin"
	echo "pinning=loadgen CPU $CPU_LG; upstream and proxies CPU $CPU_SUT; GOMAXPROCS=1, nginx worker_processes 1, haproxy nbthread 1"
	echo "idle_rss_kb=$IDLE_JSON"
	echo "quiet_wait_s=$((QUIET_WAITED_US / 1000000))"
} >"$META"
cp "$RAW" "$RESULTS/latest-raw.jsonl"
"$WORK/report" -raw "$RAW" -meta "$META" -md "$RESULTS/latest.md" -json "$RESULTS/latest.json"
log "wrote bench/results/latest.md, latest.json, latest-raw.jsonl"
