#!/usr/bin/env python3
"""Reduces headscale's captures of Tailscale's hosted service (hscontrol/policy/v2/testdata/
*_results/*.hujson) to the case format of ../../../shared/policy-golden (see README.md here).

    reduce.py SRC_DIR DST_DIR CATEGORY

Kept per case: the policy, whether the service accepted it (and its message when not), the
topology, and per node what a policy engine decides: the packet filter, the peers with their
AllowedIPs and PrimaryRoutes, the SSH policy, the node's own addresses and its capabilities
other than the ones the service gives every node of its tailnets.
"""
import json
import os
import re
import sys

# Capabilities the hosted service gives nodes for its own account features (ownership,
# admin console, Tailnet Lock, update and probe settings), whatever the policy says. They say
# nothing about the policy, so they are left out of `cap_map`.
SERVICE_CAPS = {
    "https://tailscale.com/cap/is-owner",
    "https://tailscale.com/cap/is-admin",
    "https://tailscale.com/cap/tailnet-lock",
    "https://tailscale.com/cap/ssh",
    "default-auto-update",
    "probe-udp-lifetime",
    "ssh-behavior-v1",
    "ssh-env-vars",
    "store-appc-routes",
    "tailnet-display-name",
}


def load_hujson(path):
    """The captures are JSON with `//` comment lines and trailing commas."""
    with open(path, encoding="utf-8") as f:
        lines = [l for l in f.read().split("\n") if not l.lstrip().startswith("//")]
    return json.loads(re.sub(r",(\s*[}\]])", r"\1", "\n".join(lines)))


def node_name(fqdn):
    return fqdn.split(".")[0]


def reduce_case(raw, category):
    inp = raw["input"]
    code = inp.get("api_response_code")
    if code not in (200, 400) or raw.get("capture_error"):
        return None  # the service failed, or the capture did: nothing to compare with
    accepted = code == 200
    topology = raw["topology"]
    captures = raw.get("captures") or {}
    # Node ids in registration order: the earliest router keeps a shared route.
    created = {
        name: c["netmap"]["SelfNode"].get("Created", "")
        for name, c in captures.items()
        if c.get("netmap") and c["netmap"].get("SelfNode")
    }
    for i, name in enumerate(sorted(topology["nodes"], key=lambda n: (created.get(n, "~"), n))):
        topology["nodes"][name]["id"] = i + 1
    case = {
        "id": raw["test_id"],
        "category": category,
        "description": raw.get("description", ""),
        "policy": policy if isinstance(policy := inp["full_policy"], str) else json.dumps(policy),
        "accepted": accepted,
        "rejection": None if accepted else (inp.get("api_response_body") or {}).get("message"),
        "topology": topology,
    }
    if not accepted:
        return case
    expect = {}
    for name, c in sorted(captures.items()):
        nm = c.get("netmap")
        if not nm:
            continue
        node = {}
        if "packet_filter_rules" in c:
            node["packet_filter_rules"] = c["packet_filter_rules"]
        node["peers"] = {
            node_name(p["Name"]): {
                "AllowedIPs": sorted(p.get("AllowedIPs") or []),
                "PrimaryRoutes": sorted(p.get("PrimaryRoutes") or []),
            }
            for p in nm.get("Peers") or []
        }
        node["ssh_policy"] = nm.get("SSHPolicy")
        me = nm.get("SelfNode") or {}
        node["addresses"] = me.get("Addresses") or []
        node["cap_map"] = {
            k: v for k, v in sorted((me.get("CapMap") or {}).items()) if k not in SERVICE_CAPS
        }
        expect[name] = node
    case["expect"] = expect
    return case


def main():
    src, dst, category = sys.argv[1:4]
    os.makedirs(dst, exist_ok=True)
    kept = skipped = 0
    for fname in sorted(os.listdir(src)):
        if not fname.endswith(".hujson"):
            continue
        case = reduce_case(load_hujson(os.path.join(src, fname)), category)
        if case is None:
            skipped += 1
            continue
        with open(os.path.join(dst, case["id"] + ".json"), "w", encoding="utf-8") as f:
            json.dump(case, f, sort_keys=True, separators=(",", ":"))
            f.write("\n")
        kept += 1
    print(f"{category}: {kept} cases, {skipped} skipped (the service or the capture failed)")


if __name__ == "__main__":
    main()
