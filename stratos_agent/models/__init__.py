"""Model registry: candidates with metadata, the bundled SmolLM2 teacher, its half-depth student.

    from stratos_agent.models import get_registry, local_model_path, load_model_and_tokenizer
    folder = local_model_path("smollm2-135m")          # plain HF folder (converted once, cached)
    model, tokenizer = load_model_and_tokenizer("smollm2-135m-half")
    get_registry().get("smollm2-135m").tokenizer_fingerprint

Importing this package is cheap: torch and transformers load only when a model is built or loaded.
"""

from stratos_agent.models.candidate import ModelCandidate
from stratos_agent.models.fingerprint import tokenizer_fingerprint
from stratos_agent.models.loading import load_model_and_tokenizer, local_model_path
from stratos_agent.models.registry import BUILTINS, Registry, get_registry

__all__ = [
    "BUILTINS",
    "ModelCandidate",
    "Registry",
    "get_registry",
    "load_model_and_tokenizer",
    "local_model_path",
    "tokenizer_fingerprint",
]
