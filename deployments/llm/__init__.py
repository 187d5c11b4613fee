"""LLMServer deployment and its engines (llama.cpp, vLLM) behind one Protocol."""
