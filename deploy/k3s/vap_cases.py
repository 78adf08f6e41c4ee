#!/usr/bin/env python3
"""Runs the CEL of the rendered ValidatingAdmissionPolicies against admission
requests (who, which operation, object / oldObject) and checks the verdicts.

    kubectl kustomize deploy/k3s > /tmp/r.yaml && python3 deploy/k3s/vap_cases.py /tmp/r.yaml

Needs cel-python (`pip install cel-python`) and PyYAML; check.sh runs it when
they are there. cel-python is an untyped CEL interpreter: it checks the logic
(null object on DELETE/CREATE, label removal, exemptions), not the API
server's type checking or cost limits, which only a real 1.30+ API server does.
"""
import sys

import celpy
import yaml
from celpy import celtypes

AGENT = "system:serviceaccount:mtp-system:mtp-agent"
TENANT = "alice@example.com"
NS_CONTROLLER = "system:serviceaccount:kube-system:namespace-controller"
KCM = "system:kube-controller-manager"
ADMIN = "kubernetes-admin"
GC = "system:serviceaccount:kube-system:generic-garbage-collector"

MANAGED = {"metadata": {"name": "x", "labels": {"app.kubernetes.io/managed-by": "mtp", "mtp.io/tenant": "a"}}}
OTHER = {"metadata": {"name": "x", "labels": {"foo": "bar"}}}
NO_LABELS = {"metadata": {"name": "x"}}
TERMINATING = {"metadata": {"name": "team-a-dev", "deletionTimestamp": "2025-01-01T00:00:00Z"},
               "status": {"phase": "Terminating"}}
ACTIVE = {"metadata": {"name": "team-a-dev"}, "status": {"phase": "Active"}}
LEASE = {"metadata": {"name": "mtp-agent-applier"}}

PROTECT = "mtp-protect-managed-objects"
LEASES = "mtp-agent-lease-name"
NS = dict(ns="", resource="namespaces")

# (policy, description, expected verdict, request)
CASES = [
    (PROTECT, "tenant creates an unlabelled NetworkPolicy", "allow", dict(op="CREATE", user=TENANT, obj=OTHER)),
    (PROTECT, "tenant creates a NetworkPolicy without labels", "allow", dict(op="CREATE", user=TENANT, obj=NO_LABELS)),
    (PROTECT, "tenant updates its own NetworkPolicy", "allow", dict(op="UPDATE", user=TENANT, obj=OTHER, old=NO_LABELS)),
    (PROTECT, "tenant deletes its own NetworkPolicy", "allow", dict(op="DELETE", user=TENANT, old=OTHER)),
    (PROTECT, "tenant creates an object labelled managed-by=mtp", "deny", dict(op="CREATE", user=TENANT, obj=MANAGED)),
    (PROTECT, "tenant edits a managed object", "deny", dict(op="UPDATE", user=TENANT, obj=MANAGED, old=MANAGED)),
    (PROTECT, "tenant removes the managed-by label", "deny", dict(op="UPDATE", user=TENANT, obj=OTHER, old=MANAGED)),
    (PROTECT, "tenant removes all labels", "deny", dict(op="UPDATE", user=TENANT, obj=NO_LABELS, old=MANAGED)),
    (PROTECT, "tenant adds the managed-by label to its object", "deny", dict(op="UPDATE", user=TENANT, obj=MANAGED, old=OTHER)),
    (PROTECT, "tenant deletes a managed object (object null)", "deny", dict(op="DELETE", user=TENANT, old=MANAGED)),
    (PROTECT, "cluster admin deletes a managed namespace", "deny", dict(op="DELETE", user=ADMIN, old=MANAGED, **NS)),
    (PROTECT, "collection-level DELETE (no oldObject; items are checked one by one)", "allow",
     dict(op="DELETE", user=TENANT, old=None, name="")),
    (PROTECT, "agent creates a managed namespace", "allow", dict(op="CREATE", user=AGENT, obj=MANAGED, **NS)),
    (PROTECT, "agent applies a managed object", "allow", dict(op="UPDATE", user=AGENT, obj=MANAGED, old=MANAGED)),
    (PROTECT, "agent prunes a managed NetworkPolicy", "allow", dict(op="DELETE", user=AGENT, old=MANAGED)),
    (PROTECT, "agent deletes a managed namespace", "allow", dict(op="DELETE", user=AGENT, old=MANAGED, **NS)),
    (PROTECT, "agent creates an unlabelled object", "deny", dict(op="CREATE", user=AGENT, obj=OTHER)),
    (PROTECT, "agent takes over a foreign namespace", "deny", dict(op="UPDATE", user=AGENT, obj=MANAGED, old=OTHER, **NS)),
    (PROTECT, "agent deletes a foreign NetworkPolicy", "deny", dict(op="DELETE", user=AGENT, old=OTHER)),
    (PROTECT, "agent removes the managed-by label", "deny", dict(op="UPDATE", user=AGENT, obj=OTHER, old=MANAGED)),
    (PROTECT, "namespace controller empties a terminating namespace", "allow",
     dict(op="DELETE", user=NS_CONTROLLER, old=MANAGED, nsobj=TERMINATING)),
    (PROTECT, "kube-controller-manager empties a terminating namespace", "allow",
     dict(op="DELETE", user=KCM, old=MANAGED, nsobj=TERMINATING)),
    (PROTECT, "namespace controller identity deletes in a live namespace", "deny",
     dict(op="DELETE", user=NS_CONTROLLER, old=MANAGED, nsobj=ACTIVE)),
    (PROTECT, "namespace controller identity updates a managed object", "deny",
     dict(op="UPDATE", user=NS_CONTROLLER, obj=MANAGED, old=MANAGED, nsobj=TERMINATING)),
    (PROTECT, "namespace controller identity deletes a managed namespace", "deny",
     dict(op="DELETE", user=NS_CONTROLLER, old=MANAGED, **NS)),
    (PROTECT, "garbage collector deletes an unmanaged object", "allow", dict(op="DELETE", user=GC, old=NO_LABELS)),
    (LEASES, "agent creates its Lease", "allow", dict(op="CREATE", user=AGENT, obj=LEASE, ns="kube-system", resource="leases")),
    (LEASES, "agent creates another Lease in kube-system", "deny",
     dict(op="CREATE", user=AGENT, obj={"metadata": {"name": "kube-scheduler"}}, ns="kube-system", resource="leases")),
    (LEASES, "agent creates its Lease in another namespace", "deny",
     dict(op="CREATE", user=AGENT, obj=LEASE, ns="default", resource="leases")),
    (LEASES, "someone else creates a Lease (policy does not match)", "skip",
     dict(op="CREATE", user=ADMIN, obj={"metadata": {"name": "kube-scheduler"}}, ns="kube-system", resource="leases")),
]

ENV = celpy.Environment()


def evaluate(expression, activation):
    return ENV.program(ENV.compile(expression)).evaluate(activation)


def admit(policy, op, user, obj=None, old=None, ns="team-a-dev", nsobj=None, name="x", resource="networkpolicies"):
    request = {"operation": op, "userInfo": {"username": user}, "namespace": ns, "name": name,
               "resource": {"resource": resource}}
    activation = {"request": celpy.json_to_cel(request), "object": celpy.json_to_cel(obj),
                  "oldObject": celpy.json_to_cel(old), "namespaceObject": celpy.json_to_cel(nsobj)}
    for condition in policy.get("matchConditions", []):
        result = evaluate(condition["expression"], activation)
        if isinstance(result, celpy.CELEvalError):
            return "error", f"matchCondition {condition['name']}: {result}"
        if not result:
            return "skip", ""
    variables = {}
    for variable in policy.get("variables", []):
        activation["variables"] = celtypes.MapType({celtypes.StringType(k): v for k, v in variables.items()})
        variables[variable["name"]] = evaluate(variable["expression"], activation)
    activation["variables"] = celtypes.MapType({celtypes.StringType(k): v for k, v in variables.items()})
    for validation in policy["validations"]:
        result = evaluate(validation["expression"], activation)
        if isinstance(result, celpy.CELEvalError):
            return "error", str(result)
        if result != celtypes.BoolType(True):
            return "deny", str(evaluate(validation["messageExpression"], activation))
    return "allow", ""


def main():
    docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d.get("kind") == "ValidatingAdmissionPolicy"}
    failed = 0
    for policy, description, want, request in CASES:
        got, message = admit(policies[policy], **request)
        good = got == want
        failed += not good
        print(f"{'ok  ' if good else 'FAIL'} {description}: {got}{' (' + message + ')' if message and not good else ''}")
    print(f"{len(CASES) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
