#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kubectl and etcd from the Go modules
# pinned in go.mod/go.sum (never a downloaded binary) and prints the directory
# holding them on the last line of stdout.
#
#   bash tests/kube-harness/tools/build.sh      # progress on stderr
#
# The result is cached outside the checkout, keyed by go.mod, go.sum and this
# script: with nothing changed it answers in well under a second, and a fresh
# clone on the same machine reuses it. Go's own module and build caches make a
# rebuild after a small change cheap too.
#   MTP_KUBE_TOOLS_CACHE   cache root (default: $XDG_CACHE_HOME or ~/.cache, /mtp-kube-tools)
# Several test processes may call this at once: a lock makes one build and the
# others wait for it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
k8s_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2 }
    $1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "$here/go.mod" | head -n 1)"
if [ -z "$k8s_version" ]; then
    echo "build.sh: no requirement of k8s.io/kubernetes in $here/go.mod" >&2
    exit 2
fi
if ! command -v go >/dev/null 2>&1; then
    echo "build.sh: the Go toolchain is not on PATH (needs Go $(awk '$1 == "go" { print $2 }' "$here/go.mod") or newer)" >&2
    exit 2
fi

key="$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" | sha256sum | cut -c1-16)"
root="${MTP_KUBE_TOOLS_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/mtp-kube-tools}"
# The machine's own Go builds it (go.mod asks for 1.26.0 or newer); never
# let the go command fetch a toolchain binary instead.
export GOTOOLCHAIN=local
out="$root/$k8s_version-$key"
mkdir -p "$root"

binaries=(kube-apiserver kube-controller-manager kubectl etcd)
complete() { [ -f "$out/complete" ]; }

if ! complete; then
    exec 9>"$root/.lock"
    if ! flock -n 9; then
        echo "build.sh: another process is building the Kubernetes tools; waiting for it" >&2
        flock 9
    fi
fi
if ! complete; then
    minor="${k8s_version#v1.}"
    minor="${minor%%.*}"
    ldflags="-s -w \
        -X k8s.io/component-base/version.gitVersion=$k8s_version \
        -X k8s.io/component-base/version.gitMajor=1 \
        -X k8s.io/component-base/version.gitMinor=$minor \
        -X k8s.io/component-base/version.gitTreeState=clean"
    tmp="$out.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    trap 'rm -rf "$tmp"' EXIT
    cd "$here"
    start=$(date +%s)
    echo "build.sh: building Kubernetes $k8s_version (kube-apiserver, kube-controller-manager, kubectl) and etcd from source into $out; a cold build (module download included) takes about 10 minutes on 2 cores" >&2
    # Static binaries, as upstream builds them; -mod=readonly: go.sum is the pin.
    CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "$ldflags" -o "$tmp/" \
        k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kubectl
    echo "build.sh: kube-apiserver, kube-controller-manager and kubectl built after $(($(date +%s) - start)) s; building etcd" >&2
    # Without -o the etcd binary would be named after its package, "server".
    CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
    for b in "${binaries[@]}"; do
        [ -x "$tmp/$b" ] || { echo "build.sh: $b was not built" >&2; exit 1; }
    done
    echo "$k8s_version" >"$tmp/complete"
    rm -rf "$out"
    mv "$tmp" "$out"
    trap - EXIT
    echo "build.sh: done in $(($(date +%s) - start)) s" >&2
fi
echo "$out"
