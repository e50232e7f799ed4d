"""Embedder and FAISS index over atomic relevance rules and knowledge entries."""
