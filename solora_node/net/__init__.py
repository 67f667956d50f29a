"""The wire: codec, validation, gRPC server and client, TLS, discovery and topology.

The transport modules (codec, chunks, validate, session, server, client,
security) only know the message types of solora_node.protocol and the
`BlockStore` port in solora_node.net.port; the node implements that port
(docs/architecture.md).
"""
