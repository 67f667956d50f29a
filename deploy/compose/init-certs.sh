#!/bin/sh
# One-shot certificate setup for the compose testbed (the `certs` service).
#
# Makes the federation CA once, then one certificate per node, each into that
# node's own volume together with ca.pem, so a node container sees its own key
# and the CA certificate, never the CA key or another node's key:
#
#   $CA_DIR/ca.pem, $CA_DIR/ca.key                    (volume federation-ca)
#   (file names as written by `solora-node certs`, solora_node/net/security.py)
#   $TLS_ROOT/<node>/{ca.pem,<node>.pem,<node>.key}   (volume <node>-tls, mounted
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

if [ -s "$CA_DIR/ca.pem" ] && [ -s "$CA_DIR/ca.key" ]; then
  echo "certs: reusing the federation CA in $CA_DIR"
elif [ -e "$CA_DIR/ca.pem" ] || [ -e "$CA_DIR/ca.key" ]; then
  echo "certs: error: $CA_DIR holds half a CA (ca.pem or ca.key); remove the federation-ca volume" >&2
  exit 1
else
  echo "certs: new federation CA for $FEDERATION in $CA_DIR"
  solora-node certs init-ca --dir "$CA_DIR" --federation "$FEDERATION"
fi

for node in $NODES; do
  out="$TLS_ROOT/$node"
  mkdir -p "$out"
  if [ ! -s "$out/$node.pem" ] || [ ! -s "$out/$node.key" ]; then
    echo "certs: issuing $node"
    # CN and DNS SAN are the node id, which is also the compose service name
    # that peers dial (node-N:7070), so no extra --san is needed.
    solora-node certs issue "$node" --dir "$CA_DIR" --out "$out"
  fi
  for expected in "$node.pem" "$node.key"; do
    if [ ! -s "$out/$expected" ]; then
      echo "certs: error: 'solora-node certs issue' did not write $out/$expected" >&2
      exit 1
    fi
  done
  cp "$CA_DIR/ca.pem" "$out/ca.pem"
  chown -R "$NODE_UID:$NODE_GID" "$out"
  chmod 0750 "$out"
  chmod 0644 "$out/ca.pem" "$out/$node.pem"
  chmod 0600 "$out/$node.key"
done
echo "certs: done"
