"""The ingress: HTTP API, provider choice, and the wire formats."""
