"""The base of every OpenAI-shaped body Loraboard answers with (app/api/schemas.py, and the
chat objects the completion services build, app/services/chat_objects.py).

Where OpenAI's spec types a field as an optional non-null value, a missing value is left
out, never written as null: `omit_if_none` names those fields.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, SerializationInfo, SerializerFunctionWrapHandler, model_serializer


class OpenAIObject(BaseModel):
    omit_if_none: ClassVar[frozenset[str]] = frozenset()

    # No return annotation on purpose: pydantic then documents the model's own fields in /docs.
    @model_serializer(mode="wrap")
    def _leave_out_missing(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo):  # type: ignore[no-untyped-def]
        data = handler(self)
        for name in self.omit_if_none:
            if data.get(name) is None:
                data.pop(name, None)
        return data
