#!/usr/bin/env bash
# Offline checks of the K3s manifests: renders them with kustomize and checks
# the security invariants on the rendered YAML. No cluster needed.
#   deploy/k3s/check.sh            # exit 0: all good; 1: a violation; 2: cannot render
# Needs kubectl (or kustomize), awk, grep.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); printf 'ok   %s\n' "$1"; }
bad() { failed=$((failed + 1)); printf 'FAIL %s\n' "$1"; }
check() { # check DESCRIPTION COMMAND...
    local what="$1"; shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}

render() { # render DIR > file
    if command -v kubectl >/dev/null 2>&1; then
        kubectl kustomize "$1"
    elif command -v kustomize >/dev/null 2>&1; then
        kustomize build "$1"
    else
        echo "check.sh: neither kubectl nor kustomize found" >&2
        return 2
    fi
}

# Splits a rendered stream into one file per document: $2/NNN-Kind-name.yaml.
split_docs() {
    mkdir -p "$2"
    awk -v dir="$2" '
        function flush() {
            if (buf != "") {
                f = sprintf("%s/%03d-%s-%s.yaml", dir, n, kind, name)
                printf "%s", buf > f
                close(f)
            }
            buf = ""; kind = "none"; name = "none"; inmeta = 0; n++
        }
        BEGIN { n = 0; buf = ""; kind = "none"; name = "none" }
        /^---$/ { flush(); next }
        /^kind: / { kind = $2 }
        /^metadata:/ { inmeta = 1 }
        /^[a-z]/ && !/^metadata:/ { inmeta = 0 }
        inmeta && /^  name: / && name == "none" { name = $2 }
        { buf = buf $0 "\n" }
        END { flush() }
    ' "$1"
}

docs_of() { ls "$1"/*-"$2"-*.yaml 2>/dev/null; }
has() { grep -Eq -- "$1" "${@:2}"; }
hasnt() { ! grep -Eq -- "$1" "${@:2}"; }

# --- render ------------------------------------------------------------------
if ! render "$here" >"$work/default.yaml" 2>"$work/render.err"; then
    cat "$work/render.err" >&2
    echo "check.sh: kustomize could not render $here" >&2
    exit 2
fi
ok "renders: kustomize $here ($(grep -c '^kind: ' "$work/default.yaml") objects)"

# The optional parts must render too: control plane + emptyDir component.
mkdir -p "$work/optional"
# kustomize wants relative paths to other kustomizations.
rel="$(realpath --relative-to="$work/optional" "$here")"
cat >"$work/optional/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $rel/agent
  - $rel/control-plane
components:
  - $rel/components/emptydir-state
YAML
if render "$work/optional" >"$work/optional.yaml" 2>"$work/render.err"; then
    ok "renders: agent + control-plane + components/emptydir-state"
else
    cat "$work/render.err" >&2
    bad "renders: agent + control-plane + components/emptydir-state"
fi

split_docs "$work/default.yaml" "$work/d"
split_docs "$work/optional.yaml" "$work/o"

# --- pods: default and optional renders -----------------------------------------
for variant in d o; do
    label="default"; [ "$variant" = o ] && label="optional"
    for f in $(docs_of "$work/$variant" DaemonSet) $(docs_of "$work/$variant" Deployment); do
        obj="$label $(basename "$f" .yaml | cut -d- -f2-)"
        check "$obj: no hostNetwork/hostPID/hostIPC" hasnt '^ *(- )?host(Network|PID|IPC): true' "$f"
        check "$obj: no privileged container" hasnt '^ *(- )?privileged: true' "$f"
        check "$obj: runAsNonRoot true, never false" \
            bash -c "grep -Eq '^ *runAsNonRoot: true' '$f' && ! grep -Eq '^ *runAsNonRoot: false' '$f'"
        check "$obj: non-root uid 65532, never 0" \
            bash -c "grep -Eq '^ *runAsUser: 65532' '$f' && ! grep -Eq '^ *runAsUser: 0$' '$f'"
        check "$obj: readOnlyRootFilesystem true" \
            bash -c "grep -Eq '^ *readOnlyRootFilesystem: true' '$f' && ! grep -Eq '^ *readOnlyRootFilesystem: false' '$f'"
        check "$obj: allowPrivilegeEscalation false" \
            bash -c "grep -Eq '^ *allowPrivilegeEscalation: false' '$f' && ! grep -Eq '^ *allowPrivilegeEscalation: true' '$f'"
        check "$obj: capabilities drop ALL, none added" \
            bash -c "grep -A2 -E '^ *drop:' '$f' | grep -Eq -- '- ALL' && ! grep -Eq '^ *add:' '$f'"
        check "$obj: seccompProfile RuntimeDefault" \
            bash -c "grep -A1 -E '^ *seccompProfile:' '$f' | grep -Eq 'type: RuntimeDefault'"
        check "$obj: resource requests and limits" \
            bash -c "grep -Eq '^ *requests:' '$f' && grep -Eq '^ *limits:' '$f'"
    done
    for f in $(docs_of "$work/$variant" DaemonSet); do
        check "$label DaemonSet: no hostPort" hasnt '^ *(- )?hostPort:' "$f"
        check "$label DaemonSet: its only port is the admin port (9464, named admin)" \
            bash -c "[ \"\$(grep -cE '^ *(- )?containerPort:' '$f')\" = 1 ] && grep -B1 -A1 -E '^ *(- )?containerPort: 9464$' '$f' | grep -Eq 'name: admin'"
        check "$label DaemonSet: tolerates every taint (runs on K3s servers too)" \
            bash -c "grep -A1 -E '^ *tolerations:' '$f' | grep -Eq -- '- operator: Exists'"
        check "$label DaemonSet: node name from spec.nodeName" \
            bash -c "grep -A3 -E 'name: MTP_AGENT_NODE_NAME' '$f' | grep -Eq 'fieldPath: spec.nodeName'"
        check "$label DaemonSet: join token from a mounted file of Secret mtp-agent-join" \
            bash -c "grep -Eq 'name: MTP_AGENT_JOIN_TOKEN_FILE' '$f' && grep -Eq 'secretName: mtp-agent-join' '$f' && ! grep -Eq 'name: MTP_AGENT_JOIN_TOKEN$' '$f'"
        check "$label DaemonSet: the join-token file is the Secret's volume mount, read-only, never an argument" \
            bash -c "tf=\$(grep -A1 -E 'name: MTP_AGENT_JOIN_TOKEN_FILE' '$f' | sed -nE 's/^ *value: (.*)/\\1/p') &&
                     dir=\$(dirname \"\$tf\") &&
                     grep -B1 -A1 -E '^ *name: join-token$' '$f' | grep -Eq \"mountPath: \$dir\$\" &&
                     grep -A1 -E '^ *name: join-token$' '$f' | grep -Eq 'readOnly: true' &&
                     ! grep -Eq -- '--join-token(=| |$)' '$f'"
    done
done
# State survives new Pods by default: the state dir is a hostPath on the node.
default_ds="$(docs_of "$work/d" DaemonSet)"
state_dir="$(sed -nE 's/^ *- --state-dir=(.*)$/\1/p' $default_ds)"
check "default DaemonSet: --state-dir=$state_dir is the hostPath $state_dir (DirectoryOrCreate), mounted there" bash -c "
    [ -n '$state_dir' ] &&
    grep -A3 -E '^ *(- )?hostPath:' $default_ds | grep -Eq 'path: $state_dir$' &&
    grep -A3 -E '^ *(- )?hostPath:' $default_ds | grep -Eq 'type: DirectoryOrCreate' &&
    grep -A3 -E '^ *(- )?hostPath:' $default_ds | grep -Eq 'name: state$' &&
    grep -B1 -E '^ *name: state$' $default_ds | grep -Eq 'mountPath: $state_dir$'"
check "default DaemonSet: the state dir is the only hostPath volume" \
    bash -c "[ \"\$(grep -cE '^ *(- )?hostPath:' $default_ds)\" = 1 ] && ! grep -Eq 'emptyDir' $default_ds"
optional_ds="$(docs_of "$work/o" DaemonSet)"
check "components/emptydir-state: no hostPath volume (Pod Security restricted)" hasnt '^ *(- )?hostPath:' $optional_ds

# --- namespace ---------------------------------------------------------------
ns="$(docs_of "$work/d" Namespace)"
for mode in audit warn; do
    check "Namespace mtp-system: pod-security $mode=restricted" has "pod-security.kubernetes.io/$mode: restricted" $ns
done
# Enforce is relaxed only for the hostPath state; with emptydir-state it is restricted.
check "Namespace mtp-system: pod-security enforce=privileged (hostPath state only)" has "pod-security.kubernetes.io/enforce: privileged" $ns
check "components/emptydir-state: Namespace mtp-system enforces restricted" \
    has "pod-security.kubernetes.io/enforce: restricted" $(docs_of "$work/o" Namespace)

# --- RBAC --------------------------------------------------------------------
roles="$(docs_of "$work/d" ClusterRole) $(docs_of "$work/d" Role)"
check "no Role/ClusterRole grants '*' (verbs, resources, apiGroups)" hasnt "^ *- ['\"]?\\*['\"]?$" $roles
check "no escalate/impersonate verbs, no secrets, pod subresources (exec, log, attach...) or nodes/proxy" \
    hasnt '^ *- ["]?(escalate|impersonate|secrets|pods/[a-z]+|nodes/(proxy|log|metrics)|nodes/[*])["]?$' $roles
# Split ClusterRole mtp-agent into its rules and look at the one with `bind`.
cr="$(docs_of "$work/d" ClusterRole)"
awk -v dir="$work/rules" 'BEGIN{system("mkdir -p " dir)} /^rules:/{r=1; next} r && /^- /{n++} r && /^[a-z]/{r=0} r && n {print > (dir "/" n ".yaml")}' $cr
bind_rules="$(grep -lE -- '^ *- bind$' "$work"/rules/*.yaml 2>/dev/null)"
check "bind: exactly one rule, on clusterroles, resourceNames exactly admin and edit, no other verb" bash -c "
    [ \$(echo '$bind_rules' | grep -c .) -eq 1 ] &&
    grep -Eq -- '- clusterroles$' $bind_rules &&
    [ \"\$(awk '/^  resourceNames:/{r=1;next} /^  [a-z]/{r=0} r' $bind_rules | sed 's/^ *- //' | sort | tr '\n' ' ')\" = 'admin edit ' ] &&
    [ \"\$(awk '/^  verbs:/{r=1;next} /^  [a-z]/{r=0} r' $bind_rules | sed 's/^ *- //' | tr '\n' ' ')\" = 'bind ' ]"
# Usage sampling: reading pods, the Node and the kubelet Summary, nothing more.
verbs_of_rule_with() {
    local f
    for f in "$work"/rules/*.yaml; do
        if awk '/^  resources:/{r=1;next} /^  [a-z]/{r=0} r' "$f" | grep -Eq -- "^ *- $1$"; then
            awk '/^  resources:/{r=1;next} /^  [a-z]/{r=0} r' "$f" | grep -c . | grep -qx 1 || { echo "shared rule"; return; }
            awk '/^  verbs:/{r=1;next} /^  [a-z]/{r=0} r' "$f" | sed 's/^ *- //' | sort | tr '\n' ' '
        fi
    done
}
check "ClusterRole: pods only list and watch, in a rule of their own" test "$(verbs_of_rule_with pods)" = "list watch "
check "ClusterRole: nodes only get (the agent's own Node), in a rule of their own" test "$(verbs_of_rule_with nodes)" = "get "
check "ClusterRole: nodes/stats only get (the kubelet Summary API), in a rule of their own" test "$(verbs_of_rule_with nodes/stats)" = "get "
check "ClusterRole: delete only on namespaces and networkpolicies" bash -c "
    for f in $work/rules/*.yaml; do
        if grep -Eq -- '^ *- delete$' \$f; then
            grep -Eq -- '^ *- (namespaces|networkpolicies)$' \$f || exit 1
            [ \$(awk '/^  resources:/{r=1;next} /^  [a-z]/{r=0} r' \$f | grep -c .) -eq 1 ] || exit 1
        fi
    done"

# Lease: DaemonSet flags, Role and lease policy agree.
ds="$(docs_of "$work/d" DaemonSet)"
lease_ns="$(sed -nE 's/^ *- --lease-namespace=(.*)$/\1/p' $ds)"
lease_name="$(sed -nE 's/^ *- --lease-name=(.*)$/\1/p' $ds)"
role="$(docs_of "$work/d" Role | xargs grep -l 'name: mtp-agent-lease')"
check "lease: --lease-namespace=$lease_ns and --lease-name=$lease_name set explicitly" \
    test -n "$lease_ns" -a -n "$lease_name"
check "lease: Role mtp-agent-lease lives in $lease_ns" has "^  namespace: $lease_ns$" $role
check "lease: get/update limited to resourceNames [$lease_name]" has "^  - $lease_name$" $role
check "lease: RoleBinding in $lease_ns binds the agent's ServiceAccount" bash -c "
    f=\$(ls $work/d/*-RoleBinding-mtp-agent-lease.yaml) &&
    grep -Eq '^  namespace: $lease_ns$' \$f && grep -Eq '^  name: mtp-agent$' \$f && grep -Eq '^  namespace: mtp-system$' \$f"
check "lease: policy mtp-agent-lease-name allows only $lease_ns/$lease_name" bash -c "
    f=\$(ls $work/d/*-ValidatingAdmissionPolicy-mtp-agent-lease-name.yaml) &&
    grep -q \"'$lease_ns'\" \$f && grep -q \"'$lease_name'\" \$f"

# --- admission policy ----------------------------------------------------------
vap="$(ls "$work"/d/*-ValidatingAdmissionPolicy-mtp-protect-managed-objects.yaml 2>/dev/null)"
vapb="$(ls "$work"/d/*-ValidatingAdmissionPolicyBinding-mtp-protect-managed-objects.yaml 2>/dev/null)"
check "ValidatingAdmissionPolicy mtp-protect-managed-objects present (admissionregistration.k8s.io/v1)" \
    bash -c "[ -n '$vap' ] && grep -q '^apiVersion: admissionregistration.k8s.io/v1$' '$vap'"
check "VAP: failurePolicy Fail" has '^  failurePolicy: Fail$' $vap
for r in namespaces resourcequotas limitranges serviceaccounts networkpolicies rolebindings; do
    check "VAP: covers $r" has "^ *- $r$" $vap
done
check "VAP: CREATE, UPDATE and DELETE" bash -c "grep -c -- '- DELETE' '$vap' | grep -qv '^0$' && grep -q -- '- CREATE' '$vap' && grep -q -- '- UPDATE' '$vap'"
check "VAP: looks at oldObject (DELETE, label removed)" has 'oldObject.metadata.labels' $vap
check "VAP: exempts only the agent's ServiceAccount and namespace cleanup" bash -c "
    [ \"\$(grep -oE 'system:[a-z:-]+' '$vap' | sort -u | tr '\n' ' ')\" = 'system:kube-controller-manager system:serviceaccount:kube-system:namespace-controller system:serviceaccount:mtp-system:mtp-agent ' ]"
svc="$(ls "$work"/d/*-ValidatingAdmissionPolicy-mtp-environment-services.yaml 2>/dev/null)"
svcb="$(ls "$work"/d/*-ValidatingAdmissionPolicyBinding-mtp-environment-services.yaml 2>/dev/null)"
check "ValidatingAdmissionPolicy mtp-environment-services present, failurePolicy Fail" \
    bash -c "[ -n '$svc' ] && grep -q '^  failurePolicy: Fail$' '$svc'"
check "mtp-environment-services: refuses externalIPs in mtp-labelled namespaces" \
    bash -c "[ -n '$svc' ] && grep -q 'externalIPs' '$svc' && grep -A2 'namespaceSelector:' '$svc' | grep -q 'app.kubernetes.io/managed-by: mtp'"
check "VAP binding for mtp-environment-services present" test -n "$svcb"
for b in $vapb $svcb $(ls "$work"/d/*-ValidatingAdmissionPolicyBinding-mtp-agent-lease-name.yaml 2>/dev/null); do
    check "$(basename "$b" .yaml | cut -d- -f2-): validationActions [Deny]" \
        bash -c "grep -A1 '^  validationActions:' '$b' | grep -q -- '- Deny'"
done
check "VAP binding for mtp-protect-managed-objects present" test -n "$vapb"

# The policies' CEL is evaluated by a real kube-apiserver in
# agent/tests/real_cluster (admission_policy.rs, agent_rights.rs).

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
