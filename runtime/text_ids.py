"""Token ids -> text for a byte-level BPE `tokenizer.json` (Hugging Face tokenizers format), with no
dependency beyond the standard library: the robot side reads answers and plans without `tokenizers`.

Byte-level BPE writes every byte as one printable character (bytes that are printable Latin-1 keep
their own character, the others are shifted to code points from 256 up); decoding concatenates the
tokens' strings, maps each character back to its byte and reads the bytes as UTF-8.

    decoder = IdDecoder.load("bundles/student-int8/tokenizer.json")
    decoder.decode([412, 98, 2])   # -> 'open', specials (<eos>, <pad>, <bos>) dropped
"""

from __future__ import annotations

import json
from pathlib import Path


def _byte_of_char() -> dict[str, int]:
    """The byte-level alphabet, inverted: printable character -> the byte it stands for."""
    kept = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    mapping, shifted = {}, 0
    for byte in range(256):
        if byte in kept:
            mapping[chr(byte)] = byte
        else:
            mapping[chr(256 + shifted)] = byte
            shifted += 1
    return mapping


class IdDecoder:
    def __init__(self, vocab: dict[str, int], special: set[int]) -> None:
        self.token_of = {i: tok for tok, i in vocab.items()}
        self.special = special
        self._bytes = _byte_of_char()

    @classmethod
    def load(cls, path: str | Path) -> "IdDecoder":
        data = json.loads(Path(path).read_text())
        model, decoder = data.get("model", {}), data.get("decoder") or {}
        if model.get("type") != "BPE" or decoder.get("type") != "ByteLevel":
            raise ValueError(f"{path}: only byte-level BPE tokenizers are supported (model {model.get('type')}, "
                             f"decoder {decoder.get('type')})")
        vocab = dict(model["vocab"])
        special = set()
        for added in data.get("added_tokens", []):
            vocab[added["content"]] = added["id"]
            if added.get("special"):
                special.add(added["id"])
        return cls(vocab, special)

    def decode(self, ids) -> str:
        """Text of `ids`; special tokens are dropped, unknown ids raise ValueError."""
        pieces = []
        for i in ids:
            i = int(i)
            if i in self.special:
                continue
            if i not in self.token_of:
                raise ValueError(f"token id {i} is not in the tokenizer's vocabulary")
            pieces.append(self.token_of[i])
        raw = bytes(self._bytes[c] for c in "".join(pieces) if c in self._bytes)
        return raw.decode("utf-8", errors="replace")
