"""The serving runtime: a continuous-batching engine over a paged KV cache, behind an
OpenAI-compatible HTTP server (`python -m rainier.serve --model DIR`)."""
