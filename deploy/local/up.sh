#!/usr/bin/env bash
# Sets up and starts k8s-mtp on this machine for a first look:
# PostgreSQL (data under .local/ in the checkout), the control plane,
# kube-sim as a stand-in K3s cluster registered as 'local', one mtp-agent for
# it, and the first platform-admin token, printed at the end. Safe to run again.
#
#   bash deploy/local/up.sh                    # cluster 'local' is kube-sim (fast)
#   bash deploy/local/up.sh --real-apiserver   # a real kube-apiserver + kube-controller-manager
#                                              # built from source (needs Go; the first build
#                                              # takes ~10 minutes), the agent under the
#                                              # shipped RBAC and admission policies
# MTP_LOCAL_CLUSTER=kube-sim|real-apiserver does the same as the flag.
set -euo pipefail

cluster_kind="${MTP_LOCAL_CLUSTER:-kube-sim}"
for arg in "$@"; do
  case "$arg" in
    --real-apiserver) cluster_kind=real-apiserver ;;
    --kube-sim) cluster_kind=kube-sim ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) printf 'error: unknown argument %s (see --help)\n' "$arg" >&2; exit 2 ;;
  esac
done
case "$cluster_kind" in
  kube-sim|real-apiserver) ;;
  *) printf 'error: MTP_LOCAL_CLUSTER must be kube-sim or real-apiserver, not %s\n' "$cluster_kind" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "$0")/../.." && pwd)"
state="$root/.local"
pg_bin="${MTP_PG_BIN:-/usr/lib/postgresql/15/bin}"
pg_port="${MTP_PG_PORT:-55432}"
grpc_addr="${MTP_GRPC_LISTEN:-127.0.0.1:7443}"
admin_addr="${MTP_ADMIN_LISTEN:-127.0.0.1:9090}"
sim_addr="${MTP_KUBE_SIM_LISTEN:-127.0.0.1:56443}"
# Where cargo puts the binaries (CARGO_TARGET_DIR, when set, wins).
cargo_bin="${CARGO_TARGET_DIR:-$root/target}/debug"
mkdir -p "$state/logs"

step() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# PostgreSQL refuses to run as root; run its binaries as `postgres` then.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ ! -x "$pg_bin/initdb" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    step "installing PostgreSQL 15 (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null
  else
    die "PostgreSQL 15 server binaries not found in $pg_bin (install postgresql-15, or set MTP_PG_BIN)"
  fi
fi
command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"

step "building the binaries (cargo build; the first build takes a few minutes)"
(cd "$root" && cargo build --quiet --bins)

pgdata="$state/pg"
pgrun="$state/pg-run"
if [ ! -s "$pgdata/PG_VERSION" ]; then
  step "initialising PostgreSQL in $pgdata"
  mkdir -p "$pgdata"
  [ "$(id -u)" = 0 ] && chown postgres "$pgdata"
  chmod 700 "$pgdata"
  as_pg "$pg_bin/initdb" -D "$pgdata" -U postgres --auth=trust -E UTF8 >"$state/logs/initdb.log" 2>&1 \
    || die "initdb failed, see $state/logs/initdb.log"
fi
mkdir -p "$pgrun"
[ "$(id -u)" = 0 ] && chown postgres "$pgrun" "$state/logs"
if as_pg "$pg_bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
  step "PostgreSQL already running on 127.0.0.1:$pg_port"
else
  step "starting PostgreSQL on 127.0.0.1:$pg_port"
  as_pg "$pg_bin/pg_ctl" -D "$pgdata" -l "$state/logs/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $pgrun" start >/dev/null \
    || die "PostgreSQL did not start, see $state/logs/postgres.log"
fi
as_pg "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'mtp'" | grep -q 1 \
  || as_pg "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres mtp

# TLS for the gRPC port, as in production: a local CA (made here with
# openssl, once) and a server certificate for the listen address. The CLI and
# the agent trust the CA (--ca-cert / MTP_CA_CERT). The agent CA, which signs
# agents' client certificates, is created by the control plane itself at its
# first start (--agent-ca-cert/--agent-ca-key below).
tls="$state/tls"
grpc_host="${grpc_addr%:*}"
if [ ! -s "$tls/server.crt" ] || [ ! -s "$tls/ca.crt" ]; then
  command -v openssl >/dev/null || die "openssl not found: it makes the local TLS certificates"
  step "creating a local CA and a TLS certificate for $grpc_host in $tls"
  mkdir -p "$tls" && chmod 700 "$tls"
  (
    set -e
    umask 077
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tls/ca.key"
    openssl req -x509 -new -key "$tls/ca.key" -sha256 -days 3650 -subj "/CN=mtp local CA" \
      -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -out "$tls/ca.crt"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tls/server.key"
    openssl req -new -key "$tls/server.key" -subj "/CN=localhost" -out "$tls/server.csr"
    san="DNS:localhost,IP:127.0.0.1"
    case "$grpc_host" in localhost|127.0.0.1|0.0.0.0|"") ;; *[!0-9.]*) san="$san,DNS:$grpc_host" ;; *) san="$san,IP:$grpc_host" ;; esac
    printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' "$san" >"$tls/server.ext"
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial \
      -days 825 -sha256 -extfile "$tls/server.ext" -out "$tls/server.crt"
    chmod 644 "$tls/ca.crt" "$tls/server.crt"
  ) >"$state/logs/tls.log" 2>&1 || die "creating the TLS certificates failed, see $state/logs/tls.log"
fi
grpc_url="https://$grpc_addr"
[ "$grpc_host" = 0.0.0.0 ] && grpc_url="https://127.0.0.1:${grpc_addr##*:}"

pidfile="$state/control-plane.pid"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  step "control plane already running (pid $(cat "$pidfile"))"
else
  step "starting the control plane (gRPC $grpc_addr, admin http://$admin_addr)"
  MTP_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/mtp" \
    nohup "$cargo_bin/mtp-control-plane" \
      --tls-cert "$tls/server.crt" --tls-key "$tls/server.key" \
      --agent-ca-cert "$state/agent-ca/agent-ca.crt" --agent-ca-key "$state/agent-ca/agent-ca.key" \
      --grpc-listen "$grpc_addr" --admin-listen "$admin_addr" \
      --bootstrap-token-file "$state/admin-token" \
      >"$state/logs/control-plane.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do
    if curl -fsS "http://$admin_addr/readyz" >/dev/null 2>&1; then break; fi
    kill -0 "$(cat "$pidfile")" 2>/dev/null || die "the control plane exited, see $state/logs/control-plane.log"
    sleep 0.2
  done
  curl -fsS "http://$admin_addr/readyz" >/dev/null || die "the control plane is not ready, see $state/logs/control-plane.log"
fi

[ -s "$state/admin-token" ] || die "no admin token at $state/admin-token (see $state/logs/control-plane.log)"

# The CLI, pointed at the local control plane, for the steps below.
export MTP_ADDR="$grpc_url" MTP_CA_CERT="$tls/ca.crt" MTP_TOKEN_FILE="$state/admin-token" MTP_OUTPUT=table
mtp="$cargo_bin/mtp"

# Cluster 'local': kube-sim (in memory, stands in for K3s) or a real
# kube-apiserver + kube-controller-manager (tests/kube-harness). Both keep
# their data only while they run: after a restart the agent re-applies every
# environment from the desired state it stored.
clusterpid="$state/cluster.pid"
agentpid="$state/agent.pid"
running_kind="$(cat "$state/cluster.kind" 2>/dev/null || true)"
# An older up.sh kept kube-sim's pid under this name.
[ -f "$state/kube-sim.pid" ] && mv "$state/kube-sim.pid" "$clusterpid" && running_kind=kube-sim
if [ -f "$clusterpid" ] && kill -0 "$(cat "$clusterpid")" 2>/dev/null && [ "$running_kind" != "$cluster_kind" ]; then
  step "stopping the running $running_kind (switching to $cluster_kind)"
  kill "$(cat "$clusterpid")" 2>/dev/null || true
  [ -f "$agentpid" ] && kill "$(cat "$agentpid")" 2>/dev/null || true
  rm -f "$clusterpid" "$agentpid"
  sleep 1
fi
if [ "$cluster_kind" = kube-sim ]; then
  kubeconfig="$state/kube-sim.kubeconfig"
  agent_kubeconfig="$kubeconfig"
else
  kubeconfig="$state/kube-apiserver.kubeconfig"
  agent_kubeconfig="$state/agent.kubeconfig"
fi
if [ -f "$clusterpid" ] && kill -0 "$(cat "$clusterpid")" 2>/dev/null; then
  step "$cluster_kind already running (pid $(cat "$clusterpid"))"
else
  rm -f "$kubeconfig" "$agent_kubeconfig"
  if [ "$cluster_kind" = kube-sim ]; then
    step "starting kube-sim (simulated K3s API) on $sim_addr"
    # Simulated pods in every environment namespace, with requests and
    # usage, served by kube-sim's kubelet: the agent's usage has numbers.
    nohup "$cargo_bin/kube-sim" --kubeconfig "$kubeconfig" --bind "$sim_addr" \
      --simulate-pods "${MTP_DEMO_PODS:-3}" --simulate-node local-node-1 \
      >"$state/logs/cluster.log" 2>&1 &
    echo $! >"$clusterpid"
    wait_s=10
  else
    command -v go >/dev/null || die "--real-apiserver builds Kubernetes from source and needs Go (see tests/kube-harness/tools/go.mod)"
    step "building kube-apiserver, kube-controller-manager, kubectl and etcd from source (cached after the first time)"
    MTP_KUBE_BIN="$(bash "$root/tests/kube-harness/tools/build.sh")" || die "building the Kubernetes binaries failed"
    export MTP_KUBE_BIN
    step "starting a real kube-apiserver + kube-controller-manager with deploy/k3s installed"
    nohup "$cargo_bin/mtp-kube-apiserver" --kubeconfig "$kubeconfig" --agent-kubeconfig "$agent_kubeconfig" \
      >"$state/logs/cluster.log" 2>&1 &
    echo $! >"$clusterpid"
    wait_s=180
  fi
  echo "$cluster_kind" >"$state/cluster.kind"
  for _ in $(seq 1 $((wait_s * 10))); do
    [ -s "$agent_kubeconfig" ] && break
    kill -0 "$(cat "$clusterpid")" 2>/dev/null || die "$cluster_kind exited, see $state/logs/cluster.log"
    sleep 0.1
  done
  [ -s "$agent_kubeconfig" ] || die "$cluster_kind wrote no kubeconfig, see $state/logs/cluster.log"
  # A fresh (empty) cluster: restart the agent so it re-applies at once.
  if [ -f "$agentpid" ] && kill "$(cat "$agentpid")" 2>/dev/null; then sleep 0.5; fi
  rm -f "$agentpid"
fi

"$mtp" cluster get local >/dev/null 2>&1 \
  || { step "registering cluster 'local'"; "$mtp" cluster create local --no-join-token >/dev/null; }

# A default price for every cluster, from today (OpenCost's defaults, which
# are GCP's list prices), so cost reports show money: change it with
# `mtp price set`.
if ! "$mtp" price list -o json 2>/dev/null | grep -q cpu_core_hour; then
  step "setting a default price (USD 0.031611 per core-hour, 0.004237 per GiB-hour, 0.04 per GiB-month)"
  "$mtp" price set --cpu-hour 0.031611 --memory-gib-hour 0.004237 --storage-gib-month 0.04 \
    --currency USD --from "$(date -u +%F)" >/dev/null
fi

if [ -f "$agentpid" ] && kill -0 "$(cat "$agentpid")" 2>/dev/null; then
  step "agent already running (pid $(cat "$agentpid"))"
else
  mkdir -p "$state/agent"
  join_args=()
  if [ ! -s "$state/agent/identity.json" ]; then
    # A join token is only needed until the agent has registered (its key
    # and client certificate are then in its state dir). From a file, never
    # argv; good for this one registration.
    (umask 077; "$mtp" cluster join-token create local --max-uses 1 -o json \
      | sed -n 's/.*"secret": *"\([^"]*\)".*/\1/p' >"$state/agent/join-token")
    [ -s "$state/agent/join-token" ] || die "could not mint a join token for cluster 'local'"
    join_args=(--join-token-file "$state/agent/join-token")
  fi
  # Usage: kube-sim serves the node's kubelet Summary under its own URL; a
  # real kube-apiserver has no kubelet, so no usage there.
  if [ "$cluster_kind" = kube-sim ]; then
    usage_args=(--kubelet-url "http://$sim_addr/kubelet/local-node-1")
  else
    usage_args=(--no-usage)
  fi
  step "starting mtp-agent for cluster 'local'"
  nohup "$cargo_bin/mtp-agent" --control-plane "$grpc_url" --ca-cert "$tls/ca.crt" "${usage_args[@]}" \
    --node-name local-node-1 --kubeconfig "$agent_kubeconfig" --state-dir "$state/agent" \
    --admin-addr "${MTP_AGENT_ADMIN_ADDR:-127.0.0.1:9464}" \
    "${join_args[@]}" >"$state/logs/agent.log" 2>&1 &
  echo $! >"$agentpid"
  for _ in $(seq 1 100); do
    if "$mtp" agent list -o json 2>/dev/null | grep -q '"connected": true'; then break; fi
    kill -0 "$(cat "$agentpid")" 2>/dev/null || die "the agent exited, see $state/logs/agent.log"
    sleep 0.2
  done
  "$mtp" agent list -o json | grep -q '"connected": true' || die "the agent did not connect, see $state/logs/agent.log"
  rm -f "$state/agent/join-token"
fi

cat <<MSG

k8s-mtp is running.
  control plane  $grpc_url (gRPC over TLS, CA .local/tls/ca.crt; agents use client certificates)   logs: .local/logs/control-plane.log
  admin port     http://$admin_addr/healthz /readyz /metrics
  PostgreSQL     127.0.0.1:$pg_port (data: .local/pg)
  cluster        'local' = $cluster_kind (admin kubeconfig: $kubeconfig), one agent   logs: .local/logs/cluster.log
  admin token    $(cat "$state/admin-token")

Use the CLI:
  export PATH="$cargo_bin:\$PATH" MTP_ADDR=$grpc_url MTP_CA_CERT=$tls/ca.crt MTP_TOKEN_FILE=$state/admin-token
  mtp tenant create team-a --owner-user alice@example.com --cpu 8 --memory 16Gi --storage 100Gi --pods 200 --max-environments 10
  mtp env create team-a dev --cluster local --profile small --wait
  kubectl --kubeconfig $kubeconfig get resourcequota,networkpolicy,rolebinding -n team-a-dev
  # A few minutes later (kube-sim runs simulated pods in every environment):
  mtp cost report --window 24h --by environment
Stop everything with: bash deploy/local/down.sh
MSG
