"""Teachers and students; importing this package registers the small students with ``transformers``' Auto
classes (see :mod:`egkd.models.small`)."""

from egkd.models import small  # noqa: F401  (registers BiLSTM/CNN configs and models)
