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
set -euo pipefail

DIR=${RAYREC_CLUSTER_DIR:-/tmp/rayrec-cluster}
PORT=${RAYREC_CLUSTER_PORT:-6390}
DASHBOARD=${RAYREC_DASHBOARD_PORT:-8266}   # the dashboard: Ray's state API and `serve deploy`/`serve status`
CPUS=${RAYREC_NODE_CPUS:-1}
MEMORY=$((2 * 1024 * 1024 * 1024))        # each raylet would otherwise claim all of the RAM
STORE=$((300 * 1024 * 1024))              # object store per node
export RAY_AUTH_MODE=token                # Ray 2.60's token auth (the token in ~/.ray/auth_token)
# Clients (this script's `ray status`, drivers) need RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, or Ray
# turns the address 127.0.0.1 into the machine's outward IP; the nodes must not have it (it forbids
# workers joining).
status() { RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 timeout 20 ray status --address="127.0.0.1:$PORT" 2>/dev/null; }

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

case ${1:-} in
  start)
    mkdir -p "$DIR"
    node head 127.0.0.1 --head --port="$PORT" --include-dashboard=true --dashboard-host=127.0.0.1 \
      --dashboard-port="$DASHBOARD" --resources='{}'
    for _ in $(seq 60); do  # the head is up once it answers
      if status >/dev/null; then break; fi
      alive head
      sleep 1
    done
    node worker1 127.0.0.2 --address="127.0.0.1:$PORT" --resources='{"rayrec_shard": 100}'
    node worker2 127.0.0.3 --address="127.0.0.1:$PORT" --resources='{"rayrec_shard": 100, "rayrec_encoder": 100}'
    for _ in $(seq 60); do  # until all three nodes have joined
      if [ "$(status | grep -c '^ 1 node_')" -ge 3 ]; then break; fi
      alive worker1
      alive worker2
      sleep 2
    done
    if [ "$(status | grep -c '^ 1 node_')" -lt 3 ]; then
      echo "rayrec local cluster: not all 3 nodes joined; see $DIR/*.log" >&2
      exit 1
    fi
    echo "rayrec local cluster: 3 nodes at 127.0.0.1:$PORT, dashboard http://127.0.0.1:$DASHBOARD (logs in $DIR)"
    ;;
  stop)
    # Each node's `ray start` leads a session of its own (setsid): end every process in those
    # sessions (raylet, GCS, workers), gently first, then for good.
    sids=""
    for name in worker2 worker1 head; do
      if [ -f "$DIR/$name.pid" ]; then
        sids="$sids $(cat "$DIR/$name.pid")"
        rm -f "$DIR/$name.pid"
      fi
    done
    members() { for sid in $sids; do ps -e -o pid=,sid= | awk -v s="$sid" '$2 == s {print $1}'; done; }
    members | xargs -r kill -TERM 2>/dev/null || true
    for _ in $(seq 20); do
      [ -z "$(members)" ] && break
      sleep 0.5
    done
    members | xargs -r kill -KILL 2>/dev/null || true
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
