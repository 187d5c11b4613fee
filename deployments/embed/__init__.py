"""The Embedder deployment: @serve.batch over an encoder, deduplication and a vector cache."""
