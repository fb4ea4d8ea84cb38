"""The wire contract (CONTRACT.md), below both sides: what the service answers and the client
and tests send. Nothing here touches NATS, a database or the environment.

- `headers`: the header names and how a request's headers are read (positions, waits,
  consistency, as-of), with Prefect-shaped errors;
- `replies`: a reply on the wire (status, body, position, error) for both the service, which
  writes it, and the client, which reads it.
"""
