"""Generation backends that run here rather than behind someone's API: the bundled local chat
model (``local``) and the OpenAI-compatible server around it (``server``). Both import torch and
transformers lazily; ``ragops.llm.ChatClient`` talks to the server like to any other endpoint."""

from __future__ import annotations

from ragops.generation.local import SERVED_NAME, ChatResult, LocalChatModel, ModelFile, locate_model_file

__all__ = ["SERVED_NAME", "ChatResult", "LocalChatModel", "ModelFile", "locate_model_file"]
