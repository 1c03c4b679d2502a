#!/usr/bin/env bash
# The cluster layout of cluster/aws.yaml on one machine, to try before paying for a cloud:
# a head on 127.0.0.1 and two workers on 127.0.0.2 and 127.0.0.3, all on loopback, each a
# `ray start --block` process of our own (stopped by PID, never by `ray stop`, which would stop
# every Ray on the machine). Ray's fake_multinode launcher provider is not usable from the
# pip wheel (its example config is not shipped), hence this script.
#
#   cluster/local_cluster.sh start    # start the 3 nodes; prints the address to use
#   RAY_ADDRESS=127.0.0.1:6390 RAY_AUTH_MODE=token RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 python driver.py
#   cluster/local_cluster.sh stop     # stop them
#
# Worker 127.0.0.2 offers rayrec_shard (shards), worker 127.0.0.3 rayrec_shard and
# rayrec_encoder (shards and encoders): the custom resources cluster/serve_config.multinode.yaml
# asks for. Settings through the environment:
#   RAYREC_CLUSTER_DIR   state: PIDs, logs, Ray's temp dirs (default /tmp/rayrec-cluster; keep
#                        it short: Ray's socket paths under it must fit in 107 bytes)
#   RAYREC_CLUSTER_PORT  the head's GCS port (default 6390)
#   RAYREC_DASHBOARD_PORT  the dashboard's port (default 8266)
#   RAYREC_NODE_CPUS     CPUs each node offers (default 1)
#   RAYREC_CLUSTER_STOP_WAIT_S  whole seconds `stop` gives the nodes to stop gently before it kills
#                        what is left (default 10; the tests, which need nothing drained, set 0)
set -euo pipefail

DIR=${RAYREC_CLUSTER_DIR:-/tmp/rayrec-cluster}
PORT=${RAYREC_CLUSTER_PORT:-6390}
DASHBOARD=${RAYREC_DASHBOARD_PORT:-8266}   # the dashboard: Ray's state API and `serve deploy`/`serve status`
CPUS=${RAYREC_NODE_CPUS:-1}
STOP_WAIT_S=${RAYREC_CLUSTER_STOP_WAIT_S:-10}
MEMORY=$((2 * 1024 * 1024 * 1024))        # each raylet would otherwise claim all of the RAM
STORE=$((300 * 1024 * 1024))              # object store per node
export RAY_AUTH_MODE=token                # Ray 2.60's token auth (the token in ~/.ray/auth_token)
# Clients (drivers, `ray status`) need RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, or Ray turns the address
# 127.0.0.1 into the machine's outward IP; the nodes must not have it (it forbids workers joining).

free_ports() {  # free_ports N: N TCP ports nobody listens on now, none in $TAKEN (given out already)
  python3 -c "import socket,sys
taken={int(p) for p in sys.argv[2].split()}
socks, ports = [], []
while len(ports) < int(sys.argv[1]):
    s = socket.socket(); s.bind(('127.0.0.1', 0)); socks.append(s)
    port = s.getsockname()[1]
    if port not in taken and port not in ports:
        ports.append(port)
print(' '.join(map(str, ports)))" "$1" "$TAKEN"
}
TAKEN="$PORT $DASHBOARD"  # a port handed to one node's component is never handed to another

node() {  # node NAME IP EXTRA_ARGS...: one `ray start --block` in the background, its PID kept
  local name=$1 ip=$2
  shift 2
  # Every node on this machine needs ports and a temp dir (its sockets) of its own.
  read -r nm om agent agent_grpc env_agent metrics < <(free_ports 6)
  TAKEN="$TAKEN $nm $om $agent $agent_grpc $env_agent $metrics"
  env -u RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER setsid ray start --block --node-ip-address="$ip" \
    --num-cpus="$CPUS" --memory="$MEMORY" --object-store-memory="$STORE" --temp-dir="$DIR/ray-$name" \
    --node-manager-port="$nm" --object-manager-port="$om" --dashboard-agent-listen-port="$agent" \
    --dashboard-agent-grpc-port="$agent_grpc" --runtime-env-agent-port="$env_agent" \
    --metrics-export-port="$metrics" --disable-usage-stats "$@" >"$DIR/$name.log" 2>&1 &
  echo $! >"$DIR/$name.pid"
}

alive() {  # alive NAME: fail at once, with its log, if that node's `ray start` has exited
  if ! kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; then
    echo "rayrec local cluster: node $1 exited:" >&2
    tail -5 "$DIR/$1.log" >&2
    exit 1
  fi
}

wait_started() {  # wait_started NAME: until that node's `ray start` says "Ray runtime started.", which it
  # prints once the node's raylet has registered with the GCS (a worker: it has joined the cluster).
  # Read from its log rather than by polling `ray status`: each of those is a Python start and an
  # import of Ray, seconds of CPU on a small machine.
  for _ in $(seq 600); do
    if grep -q "Ray runtime started" "$DIR/$1.log"; then return 0; fi
    alive "$1"
    sleep 0.2
  done
  echo "rayrec local cluster: node $1 did not start within 120 s; see $DIR/$1.log" >&2
  exit 1
}

case ${1:-} in
  start)
    mkdir -p "$DIR"
    node head 127.0.0.1 --head --port="$PORT" --include-dashboard=true --dashboard-host=127.0.0.1 \
      --dashboard-port="$DASHBOARD" --resources='{}'
    # The workers start once the head's GCS listens, while the head still starts its raylet and
    # dashboard (a worker's `ray start` waits, with retries, for what the head writes into the GCS).
    for _ in $(seq 600); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
      alive head
      sleep 0.2
    done
    node worker1 127.0.0.2 --address="127.0.0.1:$PORT" --resources='{"rayrec_shard": 100}'
    node worker2 127.0.0.3 --address="127.0.0.1:$PORT" --resources='{"rayrec_shard": 100, "rayrec_encoder": 100}'
    wait_started head
    wait_started worker1
    wait_started worker2
    echo "rayrec local cluster: 3 nodes at 127.0.0.1:$PORT, dashboard http://127.0.0.1:$DASHBOARD (logs in $DIR)"
    ;;
  stop)
    # Each node's `ray start` leads a session of its own (setsid). Gently first: SIGTERM to each
    # `ray start`, which drains its node and stops the processes it started (a SIGTERM to every
    # process at once would stop the head's GCS under its `ray start`, which would then wait for it,
    # ~10 s). Then, for good, SIGKILL to whatever is left in those sessions (raylet, GCS, workers).
    sids=""
    for name in worker2 worker1 head; do
      if [ -f "$DIR/$name.pid" ]; then
        sids="$sids $(cat "$DIR/$name.pid")"
        rm -f "$DIR/$name.pid"
      fi
    done
    # the live processes of those sessions (a zombie is gone once its parent has ended)
    members() { for sid in "$@"; do ps -e -o pid=,sid=,stat= | awk -v s="$sid" '$2 == s && $3 !~ /^Z/ {print $1}'; done; }
    for sid in $sids; do  # the leader if still there (its PID is its session's), else what is left
      if [ "$(ps -o sid= -p "$sid" 2>/dev/null | tr -d ' ')" = "$sid" ]; then
        kill -TERM "$sid" 2>/dev/null || true
      else
        members "$sid" | xargs -r kill -TERM 2>/dev/null || true
      fi
    done
    for _ in $(seq $((STOP_WAIT_S * 2))); do
      [ -z "$(members $sids)" ] && break
      sleep 0.5
    done
    members $sids | xargs -r kill -KILL 2>/dev/null || true
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
