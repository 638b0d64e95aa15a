"""One caller of the sandbox, run as its own process (as root or as an unprivileged user).

Usage: python sandbox_caller.py CODE [REPEAT]. Runs the snippet CODE through
`tools.interpreter.execute` REPEAT times (default 1) and prints one JSON object: the isolation
report and the results. Imports only the standard library and the interpreter module, so any
Python 3.11 the user can run will do.
"""

import dataclasses
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mathjax_train.tools.interpreter import Limits, execute, isolation_report  # noqa: E402


def main() -> None:
    code = sys.argv[1]
    repeat = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    results = [dataclasses.asdict(execute(code, timeout_s=2.0, limits=Limits(memory_mb=256))) for _ in range(repeat)]
    print(json.dumps({"report": isolation_report(), "results": results}))


if __name__ == "__main__":
    main()
