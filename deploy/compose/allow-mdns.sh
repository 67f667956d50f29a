#!/bin/sh
# Lets mDNS (UDP 5353 to 224.0.0.251) cross the compose testbed's bridge.
#
#   deploy/compose/allow-mdns.sh add|remove|check [BRIDGE]    (root; default solora0)
#
# Why: docker-compose.yml makes the `solora` network `internal` (no route out).
# For an internal network Docker drops every forwarded packet whose destination
# is outside the network's subnet, and with br_netfilter that includes multicast
# between two containers on the same bridge, so nodes would never see each
# other's mDNS adverts. This inserts one ACCEPT rule in Docker's DOCKER-USER
# chain (evaluated first, kept across dockerd restarts, not across reboots),
# limited to mDNS from that bridge back onto that bridge: nothing leaves it.
# `add` is idempotent; `remove` deletes every copy; `check` exits 0 when present.
set -eu

action=${1:-}
bridge=${2:-solora0}
rule="-i $bridge -o $bridge -p udp -d 224.0.0.251 --dport 5353 -j ACCEPT"

case "$action" in
  add)
    # shellcheck disable=SC2086  # the rule is a list of words
    iptables -C DOCKER-USER $rule 2>/dev/null || iptables -I DOCKER-USER $rule ;;
  remove)
    # shellcheck disable=SC2086
    while iptables -C DOCKER-USER $rule 2>/dev/null; do iptables -D DOCKER-USER $rule; done ;;
  check)
    # shellcheck disable=SC2086
    iptables -C DOCKER-USER $rule 2>/dev/null ;;
  *)
    echo "allow-mdns.sh: expected add, remove or check, got '$action'" >&2
    exit 2 ;;
esac
