#!/usr/bin/env bash
# A single-node Apache Kafka (KRaft, broker+controller in one JVM) for dev and CI, run from the
# broker's own jars (fetched once by Maven into .cache/kafka/lib), no container needed.
#
#   deploy/kafka/kafka.sh start    fetch jars if missing, start on free loopback ports, wait until it
#                                  answers; last stdout line is `bootstrap=127.0.0.1:PORT`
#   deploy/kafka/kafka.sh stop     stop it and wait for the JVM to exit
#   deploy/kafka/kafka.sh status   "running bootstrap=..." (exit 0) or "not running" (exit 1)
#   deploy/kafka/kafka.sh fetch    only fetch the jars (e.g. to warm a CI cache)
#
# Env: KAFKA_RUN_DIR (default .cache/kafka/run), KAFKA_CACHE_DIR (default .cache/kafka),
#      KAFKA_PORT / KAFKA_CONTROLLER_PORT (default: free ports), KAFKA_HEAP_OPTS (default -Xmx512m),
#      KAFKA_GC_OPTS (default G1, 20 ms pauses), KAFKA_EXTRA_CONFIG (lines appended to
#      server.properties, e.g. num.io.threads=2: how bench/pipeline.py tries broker settings),
#      KAFKA_START_TIMEOUT (seconds, default 90), PYTHON (for the readiness check),
#      KAFKA_KEEP_DATA=1 (start over the existing data dir, on the same ports: a broker restart).
# Data is ephemeral: every start formats a fresh log dir, so tests never see old topics
# (unless KAFKA_KEEP_DATA=1, which the outage tests use to stop and restart one broker).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${KAFKA_CACHE_DIR:-$root/.cache/kafka}"
lib="$cache/lib"
run="${KAFKA_RUN_DIR:-$root/.cache/kafka/run}"
pidfile="$run/kafka.pid"
heap="${KAFKA_HEAP_OPTS:--Xmx512m -Xms128m}"
gc="${KAFKA_GC_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20}"
timeout_s="${KAFKA_START_TIMEOUT:-90}"

die() { echo "kafka.sh: error: $*" >&2; exit 1; }
log() { echo "kafka.sh: $*" >&2; }

pick_python() {
  if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"
  elif [[ -x "$root/.venv/bin/python" ]]; then echo "$root/.venv/bin/python"
  elif command -v python3 >/dev/null; then command -v python3
  else die "python3 not found (needed to pick ports and check the broker)"; fi
}

need_java() {
  command -v java >/dev/null || die "java not found: install a JDK/JRE 17+ (e.g. apt-get install -y openjdk-17-jre-headless)"
}

pom_stamp() { sha256sum "$here/pom.xml" | cut -d' ' -f1; }

# Jars are keyed by the pom's hash: same pom and jars present = no Maven run at all.
fetch() {
  if [[ -f "$lib/.stamp" && "$(cat "$lib/.stamp")" == "$(pom_stamp)" ]]; then
    return 0
  fi
  command -v mvn >/dev/null || die "mvn not found and $lib is empty: install Maven 3.8+ (e.g. apt-get install -y maven)"
  mkdir -p "$cache"
  local tmp="$cache/lib.tmp.$$"
  rm -rf "$tmp"
  log "fetching Kafka jars into $lib (one-off)"
  if ! mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$tmp" >"$cache/mvn.log" 2>&1; then
    tail -n 40 "$cache/mvn.log" >&2 || true
    rm -rf "$tmp"
    die "Maven could not fetch the Kafka jars (full log: $cache/mvn.log)"
  fi
  ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "Maven ran but no kafka_2.13 jar landed in $tmp"
  pom_stamp >"$tmp/.stamp"
  rm -rf "$lib"
  mv "$tmp" "$lib"
}

# Our JVM only if the pid is alive AND its command line is ours (pids get reused).
running_pid() {
  [[ -f "$pidfile" ]] || return 1
  local pid
  pid="$(cat "$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka $run/server.properties" || return 1
  echo "$pid"
}

free_ports() {
  "$py" - <<'EOF'
import socket
socks = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

cluster_id() {
  # Kafka's Uuid text form: 16 random bytes, URL-safe base64, no padding, never starting with '-'.
  "$py" -c '
import base64, os
while True:
    u = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
    if not u.startswith("-"):
        print(u)
        break'
}

# Ready = the process logged "Kafka Server started" (broker unfenced) and answers the protocol:
# with aiokafka when the chosen python has it (metadata lists a broker), else a raw ApiVersions call.
ready() {
  grep -q "Kafka Server started" "$run/logs/server.log" 2>/dev/null || return 1
  "$py" - "$1" <<'EOF' >/dev/null 2>&1
import asyncio, socket, struct, sys
port = int(sys.argv[1])
try:
    from aiokafka import AIOKafkaClient
except ImportError:
    AIOKafkaClient = None

async def meta() -> None:
    c = AIOKafkaClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=3000)
    try:
        await c.bootstrap()
        md = await c.fetch_all_metadata()
        assert md.brokers()
    finally:
        await c.close()

def api_versions() -> None:
    cid = b"kafka.sh"
    body = struct.pack(">hhih", 18, 0, 1, len(cid)) + cid
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        head = s.recv(10)
        assert len(head) >= 10 and struct.unpack(">h", head[8:10])[0] == 0

if AIOKafkaClient is not None:
    asyncio.run(asyncio.wait_for(meta(), 10))
else:
    api_versions()
EOF
}

write_config() {
  local port="$1" cport="$2"
  cat >"$run/server.properties" <<EOF
# Written by deploy/kafka/kafka.sh start; rewritten on every start.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$run/data
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
# Single node: internal topics must fit on one broker; fewer partitions = faster first group join.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=5
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
log.segment.bytes=67108864
${KAFKA_EXTRA_CONFIG:-}
EOF
  cat >"$run/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $run/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
}

java_opts() {
  # shellcheck disable=SC2206
  jopts=($heap $gc -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$run/log4j2.properties" "-Dkafka.logs.dir=$run/logs"
    -cp "$lib/*")
}

start() {
  need_java
  py="$(pick_python)"
  fetch
  mkdir -p "$run"
  local pid
  if pid="$(running_pid)"; then
    log "already running (pid $pid)"
    echo "bootstrap=$(cat "$run/bootstrap")"
    return 0
  fi
  local port cport keep=0
  if [[ "${KAFKA_KEEP_DATA:-0}" == "1" && -f "$run/data/meta.properties" && -f "$run/server.properties" ]]; then
    # Restart over the same data (topics, offsets, producer state) on the same ports.
    keep=1
    port="$(sed -n 's|^listeners=PLAINTEXT://127.0.0.1:\([0-9]*\),.*|\1|p' "$run/server.properties")"
    cport="$(sed -n 's|^listeners=.*CONTROLLER://127.0.0.1:\([0-9]*\)$|\1|p' "$run/server.properties")"
  else
    read -r port cport <<<"$(free_ports)"
  fi
  port="${KAFKA_PORT:-$port}"
  cport="${KAFKA_CONTROLLER_PORT:-$cport}"
  [[ "$port" =~ ^[0-9]+$ && "$cport" =~ ^[0-9]+$ ]] || die "could not pick ports (got '$port' '$cport')"
  [[ "$port" != "$cport" ]] || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ"

  if ((keep)); then
    rm -f "$run/bootstrap" "$pidfile"
    mkdir -p "$run/logs"
    mv -f "$run/logs/server.log" "$run/logs/server.log.prev" 2>/dev/null || true
    write_config "$port" "$cport"
    java_opts
    log "keeping the data in $run/data (KAFKA_KEEP_DATA=1), port $port"
  else
    rm -rf "$run/data" "$run/logs" "$run/bootstrap" "$pidfile"
    mkdir -p "$run/data" "$run/logs"
    write_config "$port" "$cport"
    java_opts

    if ! java "${jopts[@]}" kafka.tools.StorageTool format -t "$(cluster_id)" \
        -c "$run/server.properties" --standalone >"$run/logs/format.log" 2>&1; then
      cat "$run/logs/format.log" >&2
      die "kafka-storage format failed (see $run/logs/format.log)"
    fi
  fi

  # setsid: the broker outlives this script and is not hit by Ctrl-C in the calling terminal.
  setsid java "${jopts[@]}" kafka.Kafka "$run/server.properties" \
    >"$run/logs/kafka.out" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$pidfile"

  local deadline=$((SECONDS + timeout_s))
  until ready "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$run/logs/kafka.out" "$run/logs/server.log" >&2 2>/dev/null || true
      rm -f "$pidfile"
      die "broker exited during startup (logs in $run/logs)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 30 "$run/logs/server.log" >&2 2>/dev/null || true
      stop >/dev/null 2>&1 || true
      die "broker not ready after ${timeout_s}s (logs in $run/logs)"
    fi
    sleep 0.3
  done
  echo "127.0.0.1:$port" >"$run/bootstrap"
  log "started pid $pid, logs in $run/logs"
  echo "bootstrap=127.0.0.1:$port"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$pidfile" "$run/bootstrap"
    echo "not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 300; i++)); do  # up to 30 s for a clean shutdown
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid did not stop in 30s, killing"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$pidfile" "$run/bootstrap"
  echo "stopped"
}

status() {
  local pid
  if pid="$(running_pid)"; then
    echo "running pid=$pid bootstrap=$(cat "$run/bootstrap" 2>/dev/null || echo '?')"
  else
    echo "not running"
    return 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  fetch) fetch ;;
  *) echo "usage: $0 start|stop|status|fetch" >&2; exit 2 ;;
esac
