"""The wire: codec, validation, gRPC server and client, TLS, discovery and topology.

The transport modules (codec, chunks, validate, session, server, client,
security) only know the payload types of solora_node.adapter.payload and the
`BlockStore` protocol in solora_node.net.store; the node implements that protocol.
"""
