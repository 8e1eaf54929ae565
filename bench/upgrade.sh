#!/usr/bin/env bash
# Batch upgrade benchmark: N simulated devices, one batch, no simulated delays.
#
# Builds the release binaries, starts `fleetmq` on a fresh temporary data directory, runs
# `fleetmq-sim upgrade-demo` as a separate process (registers N devices through the REST API,
# connects them, uploads an image, upgrades all of them in one batch, times it as the devices
# see it), stops the server with SIGTERM and prints the numbers.
#
#   bench/upgrade.sh                      # 10,000 devices, 64 KiB image
#   DEVICES=1000 bench/upgrade.sh
#   BROKER=rabbitmq bench/upgrade.sh      # the devices on a RabbitMQ node, fleetmq external
#
# With BROKER=rabbitmq (needs rabbitmq-server), a RabbitMQ node started as the external-broker
# tests start it (`rabbitmq-node`) listens for MQTT on MQTT_PORT and asks fleetmq's auth service
# about every login and topic; fleetmq runs with `--mqtt-broker` and its embedded broker off.
# RABBITMQ_NODES=2 starts two nodes joined in one cluster (MQTT on MQTT_PORT and MQTT_PORT+1):
# fleetmq's bridge on the first, the devices on the second, so every message crosses nodes.
# RABBITMQ_AUTH_CACHE_MS=N has the nodes cache fleetmq's auth answers for N ms
# (rabbitmq_auth_backend_cache); without it they ask fleetmq about every action.
#
# Environment: BROKER (embedded), DEVICES (10000), IMAGE_SIZE (64KiB), HTTP_PORT (18080), MQTT_PORT (11883),
# CONNECT_RATE (2000), POLL (250ms), OUT (bench/out/upgrade-<devices>-<time>: report.json,
# server.log, top.log, sim.log), KEEP=1 keeps the temporary data directory, SKIP_BUILD=1.
set -euo pipefail

cd "$(dirname "$0")/.."
BROKER=${BROKER:-embedded}
DEVICES=${DEVICES:-10000}
IMAGE_SIZE=${IMAGE_SIZE:-64KiB}
HTTP_PORT=${HTTP_PORT:-18080}
MQTT_PORT=${MQTT_PORT:-11883}
CONNECT_RATE=${CONNECT_RATE:-2000}
POLL=${POLL:-250ms}
OUT=${OUT:-bench/out/upgrade-$DEVICES-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# Every device is a socket in the simulator and in the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "open files limit: $(ulimit -n)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((DEVICES + 1000)) ]; then
    echo "warning: the open files limit is below what $DEVICES devices need" >&2
fi

if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -p fleetmq -p fleetmq-sim
    cargo build --release -p fleetmq-tests --bin rabbitmq-node
fi
SERVER=target/release/fleetmq
SIM=target/release/fleetmq-sim

DATA=$(mktemp -d /tmp/fleetmq-upgrade-bench.XXXXXX)
SERVER_PID=
BROKER_PID=
TOP_PID=
THREADS_PID=
cleanup() {
    [ -n "$TOP_PID" ] && kill "$TOP_PID" "$THREADS_PID" 2>/dev/null || true
    if [ -n "$BROKER_PID" ]; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [ -z "${KEEP:-}" ]; then rm -rf "$DATA"; else echo "data kept in $DATA"; fi
}
trap cleanup EXIT

case $BROKER in
    embedded)
        PLANE_ARGS=(--mqtt-addr "127.0.0.1:$MQTT_PORT" --mqtt-max-connections $((DEVICES + 2000)))
        ;;
    rabbitmq)
        # The bridge's login at the broker, and the secret the broker's auth requests carry.
        # The auth service's rate bound is raised: every device's login and subscription
        # asks it several questions, at the simulator's connect rate.
        BRIDGE_PASSWORD="bridge-$RANDOM-$RANDOM"
        AUTH_SECRET="auth-$RANDOM-$RANDOM"
        PLANE_ARGS=(--mqtt-addr "127.0.0.1:0" --mqtt-broker "mqtt://127.0.0.1:$MQTT_PORT"
            --mqtt-broker-username fleetmq-bridge --mqtt-broker-password "$BRIDGE_PASSWORD"
            --broker-auth-secret "$AUTH_SECRET" --broker-auth-rate 1000000)
        ;;
    *) echo "BROKER=$BROKER: embedded or rabbitmq" >&2; exit 2 ;;
esac

echo "starting the server (data in $DATA, log in $OUT/server.log)"
# Every simulated device downloads from 127.0.0.1: the per-address HTTP connection bound
# (128, against one client opening many) is raised to the whole server's (1,024), which
# stays as it is.
FLEETMQ_HTTP_MAX_CONNECTIONS_PER_ADDR=${FLEETMQ_HTTP_MAX_CONNECTIONS_PER_ADDR:-1024} \
FLEETMQ_ADMIN_PASSWORD="bench-$RANDOM-$RANDOM-password" RUST_LOG=${RUST_LOG:-info} \
    "$SERVER" --data-dir "$DATA/data" --http-addr "127.0.0.1:$HTTP_PORT" \
    --mqtts-addr off --mqtt-ws-addr off "${PLANE_ARGS[@]}" ${SERVER_ARGS:-} \
    >"$OUT/server.out" 2>"$OUT/server.log" &
SERVER_PID=$!

RABBITMQ_NODES=${RABBITMQ_NODES:-1}
DEVICE_MQTT=127.0.0.1:$MQTT_PORT
if [ "$BROKER" = rabbitmq ]; then
    case $RABBITMQ_NODES in
        1) PORTS=$MQTT_PORT ;;
        2) PORTS=$MQTT_PORT,$((MQTT_PORT + 1)); DEVICE_MQTT=127.0.0.1:$((MQTT_PORT + 1)) ;;
        *) echo "RABBITMQ_NODES=$RABBITMQ_NODES: 1 or 2" >&2; exit 2 ;;
    esac
    echo "starting $RABBITMQ_NODES RabbitMQ node(s) (MQTT on $PORTS; devices on $DEVICE_MQTT)"
    target/release/rabbitmq-node "$PORTS" \
        "http://rabbitmq:$AUTH_SECRET@127.0.0.1:$HTTP_PORT/broker-auth/rabbitmq" ${RABBITMQ_AUTH_CACHE_MS:-} \
        >"$OUT/broker.out" 2>"$OUT/broker.log" &
    BROKER_PID=$!
fi

TOKEN=
for _ in $(seq 1 300); do
    TOKEN=$(sed -n 's/^  token:    \(.*\)$/\1/p' "$OUT/server.out" | head -n1)
    [ -n "$TOKEN" ] && grep -q '^REST API on' "$OUT/server.out" && break
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "the server exited:" >&2; tail -n 20 "$OUT/server.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$TOKEN" ] || { echo "no token in the server's banner" >&2; exit 1; }
API="http://127.0.0.1:$HTTP_PORT"

curl -fsS -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{"name": "Upgrade bench", "slug": "bench"}' "$API/api/v1/users/organization/" >/dev/null

BEAM_PIDS=
if [ "$BROKER" = rabbitmq ]; then
    # Ready when the node listens and fleetmq's bridge is subscribed to it.
    for _ in $(seq 1 900); do
        [ "$(grep -c '^mqtt ' "$OUT/broker.out")" = "$RABBITMQ_NODES" ] && curl -sS "$API/healthz" 2>/dev/null | jq -e '.broker == "ok"' >/dev/null && break
        kill -0 "$BROKER_PID" 2>/dev/null || { echo "rabbitmq-node exited:" >&2; tail -n 20 "$OUT/broker.log" >&2; exit 1; }
        sleep 0.1
    done
    curl -sS "$API/healthz" 2>/dev/null | jq -e '.broker == "ok"' >/dev/null || { echo "the bridge never subscribed to RabbitMQ" >&2; exit 1; }
    # Each node's Erlang VM: in the process group of a start script rabbitmq-node runs.
    BEAM_PIDS=
    for script in $(pgrep -P "$BROKER_PID"); do
        BEAM_PIDS="$BEAM_PIDS $(pgrep -g "$script" -x beam.smp || true)"
    done
    BEAM_PIDS=$(echo $BEAM_PIDS)
    [ -n "$BEAM_PIDS" ] || echo "warning: RabbitMQ's beam.smp not found; its memory is not reported" >&2
fi

echo "running fleetmq-sim upgrade-demo with $DEVICES devices, a $IMAGE_SIZE image (log in $OUT/sim.log)"
"$SIM" --api "$API" --token "$TOKEN" --org bench --devices "$DEVICES" \
    --mqtt "$DEVICE_MQTT" --csv "$DATA/devices.csv" --register-concurrency 32 \
    --telemetry-interval 0 --coordinates-interval 0 --connect-rate "$CONNECT_RATE" \
    --connect-timeout 300s \
    upgrade-demo --image-size "$IMAGE_SIZE" --poll-interval "$POLL" --watch-timeout 15m \
    --report "$OUT/report.json" \
    > >(tee "$OUT/sim.out") 2>"$OUT/sim.log" &
SIM_PID=$!
# CPU and memory of both processes, every second.
top -b -d 1 -p "$SERVER_PID" -p "$SIM_PID" $(for p in $BEAM_PIDS; do echo "-p $p"; done) >"$OUT/top.log" 2>/dev/null &
TOP_PID=$!
# The server's busiest threads, every second (which part of it is busy).
top -H -b -d 1 -p "$SERVER_PID" 2>/dev/null | awk '/^top -/ {print; n = 0; next} /^ *[0-9]/ && n++ < 12' >"$OUT/top-threads.log" &
THREADS_PID=$!
# PERF=1: sample the server's stacks (perf record) while the simulator runs.
PERF_PID=
if [ -n "${PERF:-}" ]; then
    perf record -q -F 499 -g -p "$SERVER_PID" -o "$OUT/perf.data" 2>"$OUT/perf.log" &
    PERF_PID=$!
fi
SIM_STATUS=0
wait "$SIM_PID" || SIM_STATUS=$?

# Questions the broker asked fleetmq's auth service (0 on the embedded broker).
AUTH_ANSWERS=$(curl -sS "$API/metrics" 2>/dev/null | awk '/^fleetmq_broker_auth_answers_total/ {n += $2} END {print n + 0}')
SERVER_HWM=$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER_PID/status")
SERVER_RSS=$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status")
SERVER_CPU=$(awk '{printf "%.1f", ($14 + $15) / 100}' "/proc/$SERVER_PID/stat")
BROKER_HWM=null
BROKER_CPU=null
if [ -n "$BEAM_PIDS" ]; then
    # Summed over the nodes.
    BROKER_HWM=$(for p in $BEAM_PIDS; do awk '/^VmHWM:/ {print $2}' "/proc/$p/status"; done | awk '{n += $1} END {print n}')
    BROKER_CPU=$(for p in $BEAM_PIDS; do cat "/proc/$p/stat"; done | awk '{n += $14 + $15} END {printf "%.1f", n / 100}')
fi
kill "$TOP_PID" "$THREADS_PID" 2>/dev/null || true
if [ -n "$PERF_PID" ]; then
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    perf report -i "$OUT/perf.data" --no-children --sort comm,tid --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -20 >"$OUT/perf-threads.txt" || true
    perf report -i "$OUT/perf.data" --no-children --sort sym --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -60 >"$OUT/perf-symbols.txt" || true
fi
TOP_PID=
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" || echo "warning: the server exited with $?" >&2
SERVER_PID=

if [ "$SIM_STATUS" -ne 0 ] || [ ! -f "$OUT/report.json" ]; then
    echo "fleetmq-sim failed ($SIM_STATUS); see $OUT/sim.log" >&2
    tail -n 20 "$OUT/sim.log" >&2
    exit 1
fi

jq --argjson hwm "$SERVER_HWM" --argjson rss "$SERVER_RSS" --argjson cpu "$SERVER_CPU" \
    --argjson broker_hwm "$BROKER_HWM" --argjson broker_cpu "$BROKER_CPU" \
    --argjson auth_answers "$AUTH_ANSWERS" --argjson auth_cache_ms "${RABBITMQ_AUTH_CACHE_MS:-null}" \
    --arg broker "$BROKER" --arg cores "$(nproc)" \
    '. + {broker: $broker, server_peak_rss_kib: $hwm, server_rss_kib_at_end: $rss, server_cpu_seconds: $cpu,
          broker_peak_rss_kib: $broker_hwm, broker_cpu_seconds: $broker_cpu,
          broker_auth_answers: $auth_answers, broker_auth_cache_ms: $auth_cache_ms, cores: ($cores | tonumber)}' \
    "$OUT/report.json" >"$OUT/report.json.tmp" && mv "$OUT/report.json.tmp" "$OUT/report.json"

jq -r '
  def s: if . == null then "—" else (. / 1000 | tostring | .[0:6]) + " s" end;
  "",
  "batch upgrade of \(.devices) devices, \(.image_size) byte image, \(.cores) cores, MQTT broker: \(if .broker == "rabbitmq" then "RabbitMQ (fleetmq external)" else "fleetmq'"'"'s own" end)",
  "  connect               \(.connected_before_batch) devices connected in \(.connect_phase_ms | s) (simulator paced at '"$CONNECT_RATE"'/s)",
  "  batch status          \(.batch_status) (\(.progress_report)); success \(.status_counts.success), failed \(.status_counts.failed)",
  "  dispatch              \(.dispatch_ms | s)  (batch POST answered → last device got its first images/fetch; \(.devices_fetched) devices)",
  "  completion (batch)    \(.completion_batch_ms | s)  (→ batch detail not in-progress, polled every \(.poll_interval_ms) ms)",
  "  completion (devices)  \(.completion_devices_ms | s)  (→ last device online on the new firmware; \(.devices_on_new_firmware) devices)",
  "  per device            p50 \(.per_device_ms.p50 | s)  p90 \(.per_device_ms.p90 | s)  p99 \(.per_device_ms.p99 | s)  max \(.per_device_ms.max | s)",
  "  server                peak RSS \(.server_peak_rss_kib / 1024 | floor) MiB, \(.server_cpu_seconds) s CPU in all",
  (if .broker_peak_rss_kib then "  RabbitMQ ('"$RABBITMQ_NODES"' node(s)) peak RSS \(.broker_peak_rss_kib / 1024 | floor) MiB, \(.broker_cpu_seconds) s CPU in all" else empty end),
  (if .broker == "rabbitmq" then "  auth questions        \(.broker_auth_answers) answered by fleetmq (\(.broker_auth_answers / .devices | floor) per device; RabbitMQ cache: \(if .broker_auth_cache_ms then "\(.broker_auth_cache_ms) ms" else "off" end))" else empty end),
  "  simulator             peak RSS \((.sim_peak_rss_kib // 0) / 1024 | floor) MiB",
  "report: '"$OUT"'/report.json"
' "$OUT/report.json"
