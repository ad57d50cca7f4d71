"""Fine-tuning methods, registered by name (``full``, ``head``, ``lora``, ``ia3``)."""

from tuneforge.methods import full, head, peft_methods  # noqa: F401  (register themselves)
from tuneforge.methods.registry import Method, get_method, method_names, register_method

__all__ = ["Method", "get_method", "method_names", "register_method"]
