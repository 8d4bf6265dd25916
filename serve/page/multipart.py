"""Multipart bodies read alongside Gradio by the parser Gradio itself uses (python-multipart, and
Starlette's charset rule), so the guard and Gradio see the same parts."""

from __future__ import annotations

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.formparsers import _user_safe_decode


class PartsScan:
    """A multipart body read as Gradio reads it (python-multipart, Gradio's charset rule), to
    refuse it as soon as it has too many parts or a file outside the field Gradio reads."""

    def __init__(self, content_type: bytes, max_parts: int, file_field: str | None):
        _, params = parse_options_header(content_type)
        charset = params.get(b"charset", b"utf-8")
        self.charset = charset.decode("latin-1") if isinstance(charset, bytes) else charset
        self.max_parts, self.file_field = max_parts, file_field
        self.parts = 0
        self.problem: tuple[int, str] | None = None
        self._name, self._value, self._disposition = b"", b"", b""
        self._parser = None
        boundary = params.get(b"boundary")
        if boundary:  # without one, Gradio refuses the body itself
            self._parser = MultipartParser(
                boundary,
                {
                    "on_part_begin": self._part_begin,
                    "on_header_field": self._header_field,
                    "on_header_value": self._header_value,
                    "on_header_end": self._header_end,
                    "on_headers_finished": self._headers_finished,
                },
            )

    def feed(self, chunk: bytes) -> None:
        """Read the next bytes; sets .problem (status, reason) when the body is to be refused."""
        if self._parser is None or self.problem is not None:
            return
        try:
            self._parser.write(chunk)
        except MultipartParseError as e:  # Gradio's parser fails the same way: refused here
            self.problem = (400, f"Malformed multipart body: {e}")

    def _part_begin(self) -> None:
        self.parts += 1
        self._disposition = b""
        if self.parts > self.max_parts:
            self.problem = (413, f"Too many parts: this route takes at most {self.max_parts}.")

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]  # python-multipart stops a header past 8 KiB itself

    def _header_end(self) -> None:
        if self._name.lower() == b"content-disposition":
            self._disposition = self._value
        self._name, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = _user_safe_decode(options.get(b"name", b""), self.charset)
        if self.file_field is not None and b"filename" in options and name != self.file_field:
            self.problem = (400, f"Send files in the `{self.file_field}` field only.")
