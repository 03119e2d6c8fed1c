"""egkd: explanation guided knowledge distillation for fine-tuned language models.

The Python API mirrors the CLI: ``egkd.finetune``, ``egkd.distill``, ``egkd.evaluate``, ``egkd.predict``.
"""

import sys
from typing import Any

__version__ = "0.1.0"
__all__ = ["finetune", "distill", "evaluate", "predict"]


def __getattr__(name: str) -> Any:
    # imported lazily so that `egkd --help` does not pay for importing torch and transformers
    if name in __all__:
        from egkd import api

        return getattr(api, name)
    raise AttributeError(name)


if "transformers" in sys.modules:  # already paid for: register the small students with the Auto classes now
    import egkd.models  # noqa: E402, F401
