"""synthembed: turn a decoder-only LLM into a text-embedding model (Wang et al., 2024, "E5-mistral")."""

__version__ = "0.1.0"
