"""Live delivery over WebSocket: the endpoint, the hub of local connections, the tail that follows
the outbox, the bus that joins API processes, presence and typing."""
