"""The wire wing: what crosses the network, as models. OpenAI's bodies (openai.py requests,
replies.py responses, completions.py, responses.py), LEARN-X's (learnx.py), the rules every request
follows (rules.py), parameters (params.py) and SSE (sse.py). Imports no other wing."""
