"""The education domain, pure Python (no Ray, no network): learner profiles, difficulty, content
types with versioned templates and output contracts, and structure detection of streamed text."""
