"""The run wing: one request's run over the models, ranked by policy.py, tried in order by
fallback.py (attempts.py: the attempts and their events; ttft.py: first-token limits), through the
providers (providers/). Imports only the wire wing (and core, models, deployments)."""
