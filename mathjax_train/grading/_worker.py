"""Worker process main loop: one JSON request per stdin line, one JSON verdict per stdout line."""

from __future__ import annotations

import json
import sys


def _limit_memory(limit_bytes: int = 4 << 30) -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    except (ImportError, ValueError, OSError):
        pass


def main() -> None:
    _limit_memory()
    import sympy  # noqa: F401  (import before "ready" so start-up is not charged to a request)

    from mathjax_train.grading.equivalence import compare_answers

    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            reply: dict[str, object] = {"equal": bool(compare_answers(req["gold"], req["pred"], symbolic=True))}
        except Exception as exc:  # reported to the parent, which counts it
            reply = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
