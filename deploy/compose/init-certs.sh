#!/bin/sh
# One-shot certificate setup for the compose testbed (the `certs` service).
#
# Makes the federation CA once, then one certificate per node, each into that
# node's own volume together with ca.crt, so a node container sees its own key
# and the CA certificate, never the CA key or another node's key:
#
#   $CA_DIR/ca.crt, $CA_DIR/ca.key                    (volume federation-ca)
#   $TLS_ROOT/<node>/{ca.crt,<node>.crt,<node>.key}   (volume <node>-tls, mounted
#                                                      at /etc/solora-node/tls)
#
# Idempotent: existing files are kept, so `docker-compose up` again reuses the
# same CA. Runs as root to set ownership; node containers run as uid 10001.
set -eu

CA_DIR=${CA_DIR:-/var/lib/solora-ca}
TLS_ROOT=${TLS_ROOT:-/tls}
FEDERATION=${SOLORA_FEDERATION:-solora-compose}
NODES=${SOLORA_NODES:?set SOLORA_NODES to the space-separated node ids}
NODE_UID=${NODE_UID:-10001}
NODE_GID=${NODE_GID:-10001}

umask 077
mkdir -p "$CA_DIR"

if [ ! -s "$CA_DIR/ca.crt" ] || [ ! -s "$CA_DIR/ca.key" ]; then
  echo "certs: new federation CA for $FEDERATION in $CA_DIR"
  solora-node certs init-ca --dir "$CA_DIR" --federation "$FEDERATION"
else
  echo "certs: reusing the federation CA in $CA_DIR"
fi

for node in $NODES; do
  out="$TLS_ROOT/$node"
  mkdir -p "$out"
  if [ ! -s "$out/$node.crt" ] || [ ! -s "$out/$node.key" ]; then
    echo "certs: issuing $node (SAN $node)"
    # The SAN is the compose service name: peers dial node-N:7070.
    solora-node certs issue "$node" --dir "$CA_DIR" --out "$out" --san "$node"
  fi
  for expected in "$node.crt" "$node.key"; do
    if [ ! -s "$out/$expected" ]; then
      echo "certs: error: 'solora-node certs issue' did not write $out/$expected" >&2
      exit 1
    fi
  done
  cp "$CA_DIR/ca.crt" "$out/ca.crt"
  chown -R "$NODE_UID:$NODE_GID" "$out"
  chmod 0750 "$out"
  chmod 0644 "$out/ca.crt" "$out/$node.crt"
  chmod 0600 "$out/$node.key"
done
echo "certs: done"
