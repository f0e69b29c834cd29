"""Running checks: one line each (PASS, FAIL with the reason, SKIP with why), a summary,
and the exit code."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import grpc


class Failed(AssertionError):
    """A check's expectation was not met; the message says what was seen."""


class Skipped(Exception):
    """A check that does not apply to this configuration; the message says why."""


def expect(condition: object, message: str) -> None:
    if not condition:
        raise Failed(message)


def expect_code(call: Callable[[], Any], code: grpc.StatusCode, contains: str = "") -> str:
    """Runs `call`, which must fail with `code` (and a message containing `contains`);
    returns the message."""
    try:
        call()
    except grpc.RpcError as e:
        got, details = e.code(), e.details() or ""
        expect(got == code, f"expected {code.name}, got {got.name}: {details!r}")
        expect(details.strip(), f"{code.name} without a message")
        expect(
            contains.lower() in details.lower(),
            f"{code.name} message {details!r} does not mention {contains!r}",
        )
        return details
    raise Failed(f"expected {code.name}, but the call succeeded")


@dataclass
class Result:
    name: str
    status: str  # PASS, FAIL or SKIP
    detail: str
    seconds: float


class Suite:
    """Runs named checks in order and prints one line per check."""

    def __init__(self, role: str, out: TextIO = sys.stdout):
        self.role = role
        self.out = out
        self.results: list[Result] = []

    def check(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Runs `fn(*args)` as check `name`; returns its value (None if it failed)."""
        start = time.monotonic()
        value, status, detail = None, "PASS", ""
        try:
            value = fn(*args)
        except Skipped as e:
            status, detail = "SKIP", str(e)
        except Failed as e:
            status, detail = "FAIL", str(e)
        except grpc.RpcError as e:
            status, detail = "FAIL", f"unexpected {e.code().name}: {e.details()!r}"
        except Exception as e:  # noqa: BLE001 - a crash in a check is that check's failure
            status, detail = "FAIL", f"{type(e).__name__}: {e}"
        seconds = time.monotonic() - start
        self.results.append(Result(name, status, detail, seconds))
        line = f"{status}  {self.role}.{name}"
        if detail:
            line += f": {detail}"
        print(line, file=self.out, flush=True)
        return value

    def failed(self) -> list[str]:
        return [r.name for r in self.results if r.status == "FAIL"]

    def summary(self) -> int:
        """Prints the summary line; returns the exit code (1 if any check failed)."""
        counts = {s: sum(r.status == s for r in self.results) for s in ("PASS", "FAIL", "SKIP")}
        total = sum(r.seconds for r in self.results)
        print(
            f"{self.role}: {counts['PASS']} passed, {counts['FAIL']} failed, "
            f"{counts['SKIP']} skipped in {total:.1f}s"
            + (f" (failed: {', '.join(self.failed())})" if counts["FAIL"] else ""),
            file=self.out,
            flush=True,
        )
        return 1 if counts["FAIL"] else 0
