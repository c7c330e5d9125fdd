"""One exception root for proofs/: misuse by our code vs bad bytes from a peer."""


class ProofsError(Exception):
    """Root of every exception raised by proofs/."""


class DecodeError(ProofsError):
    """Bytes from outside do not decode to a well-formed value. The peer's fault: drop it.

    ``reason`` is a short stable name used as a drop counter key (``/status`` ``dropped``).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class BadSignature(ProofsError):
    """A signature does not verify. The peer's fault."""
