"""Tokens as generate() makes them: the text pieces a streamed answer shows, with their logprobs.

At each step generate() first passes the logits through its processors, then picks a token
and hands it to its streamer. LogprobRecorder is a processor; generate() runs the processors
it is given before temperature and top-p, so it sees the model's own distribution and keeps
that step's log-softmax. TokenStream is the streamer: it pairs each new token with that row
(the token's logprob and the top alternatives), decodes the text so far and hands out the
part that can no longer change. It holds back what the finished answer might still cut: a
half-decoded character, trailing spaces (the answer is stripped) and a possible beginning of
a stop string. So the pieces, joined, are exactly the non-streamed answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any

from transformers import LogitsProcessor
from transformers.generation.streamers import BaseStreamer

Piece = dict[str, Any]  # {"text": str, "logprobs": [token entry, ...] | None}
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # sentencepiece's tokens for single bytes


@cache
def _byte_level_alphabet() -> dict[str, int]:
    """Byte-level BPE (GPT-2, Llama 3) writes each byte as a printable character: char -> byte."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    characters = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            characters.append(256 + extra)
            extra += 1
    return {chr(character): byte for byte, character in zip(printable, characters, strict=True)}


class LogprobRecorder(LogitsProcessor):
    def __init__(self) -> None:
        self.pending: list[Any] = []  # one log-softmax row per step, until its token arrives

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        self.pending.append(torch.log_softmax(scores[0].float(), dim=-1))
        return scores


class TokenStream(BaseStreamer):
    def __init__(
        self,
        tokenizer: Any,
        *,
        stop: list[str] | None = None,
        recorder: LogprobRecorder | None = None,
        top_logprobs: int = 0,
        on_piece: Callable[[Piece], None] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.stop = [marker for marker in stop or [] if marker]
        self.recorder = recorder
        self.top_logprobs = top_logprobs
        self.on_piece = on_piece
        self.token_ids: list[int] = []
        self.pieces: list[Piece] = []
        self.emitted = ""
        self.stopped_on_string = False
        self._unsent_logprobs: list[dict[str, Any]] = []
        self._prompt_seen = False
        self._special = set(tokenizer.all_special_ids)

    # --- BaseStreamer ---------------------------------------------------------------

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate() first hands over the prompt itself
            self._prompt_seen = True
            return
        for token_id in value.reshape(-1).tolist():
            self.token_ids.append(int(token_id))
            row = self.recorder.pending.pop(0) if self.recorder and self.recorder.pending else None
            if row is not None and token_id not in self._special:
                self._unsent_logprobs.append(self._logprob_entry(int(token_id), row))
        self._emit(final=False)

    def end(self) -> None:
        self._emit(final=True)

    # --- text -------------------------------------------------------------------------

    @property
    def content(self) -> str:
        return self.emitted

    def _visible(self, final: bool) -> str:
        text = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        for marker in self.stop:
            if marker in text:
                text, self.stopped_on_string = text[: text.index(marker)], True
        return text.strip() if final else text.lstrip()

    def _emit(self, final: bool) -> None:
        visible = self._visible(final)
        safe = len(visible)
        if not final:
            hold = max((len(marker) for marker in self.stop), default=1) - 1
            safe = min(len(visible.rstrip().rstrip("\ufffd")), len(visible) - hold)
        if not visible.startswith(self.emitted):
            return  # decoding re-read an earlier character differently: wait for the end
        new_text = visible[len(self.emitted) : max(safe, len(self.emitted))]
        if not new_text and not (final and self._unsent_logprobs):
            return
        piece: Piece = {
            "text": new_text,
            "logprobs": self._unsent_logprobs if self.recorder is not None else None,
        }
        self._unsent_logprobs = []
        self.emitted += new_text
        self.pieces.append(piece)
        if self.on_piece is not None:
            self.on_piece(piece)

    # --- logprobs -----------------------------------------------------------------------

    def _token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def _token_bytes(self, token_id: int, text: str) -> list[int]:
        """The token's own UTF-8 bytes: a token may hold part of a character, which its text cannot show."""
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if isinstance(piece, str):
            if match := _BYTE_FALLBACK.fullmatch(piece):
                return [int(match.group(1), 16)]
            alphabet = _byte_level_alphabet()
            if piece and all(character in alphabet for character in piece):
                return [alphabet[character] for character in piece]
        return list(text.encode())

    def _logprob_entry(self, token_id: int, row: Any) -> dict[str, Any]:
        import torch

        top: list[dict[str, Any]] = []
        if self.top_logprobs:
            values, indices = torch.topk(row, self.top_logprobs)
            for logprob, index in zip(values.tolist(), indices.tolist(), strict=True):
                text = self._token_text(int(index))
                top.append(
                    {"token": text, "logprob": float(logprob), "bytes": self._token_bytes(int(index), text)}
                )
        text = self._token_text(token_id)
        return {
            "token": text,
            "logprob": float(row[token_id]),
            "bytes": self._token_bytes(token_id, text),
            "top_logprobs": top,
        }
