"""The services wing: one service per route family (chat, completions, responses, content,
embeddings), their shared helpers (tools, single-flight, prompt caches, readiness), and wiring.py,
which builds them all from the config. Imports run, usage and wire; the http wing calls it."""
