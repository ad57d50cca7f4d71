"""The HTTP server: OpenAI-compatible fine-tuning and inference API plus tuneforge's own."""
