"""The HTTP API: thin handlers that parse a request, call one service and serialise the result."""
