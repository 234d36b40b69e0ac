"""The plain-Python plugin of the plugin group: JSON lines over stdin/stdout, the output in base64.

Run as a script (``python _jsonl_plugin.py``): it echoes each ``process`` request's execution back, after
decoding it as a plugin would (the output to bytes) and encoding it again.
"""

from __future__ import annotations

import base64
import json
import sys


def main() -> None:
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        request = json.loads(line)
        execution = request["execution"]
        output = base64.b64decode(execution["output"])
        execution["output"] = base64.b64encode(output).decode("ascii")
        out.write(
            json.dumps({"type": "result", "id": request["id"], "execution": execution}).encode() + b"\n"
        )
        out.flush()


if __name__ == "__main__":
    main()
