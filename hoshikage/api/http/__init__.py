"""The HTTP plumbing every surface shares: reading bodies, errors, framing, streams, connections, auth, app keys."""
