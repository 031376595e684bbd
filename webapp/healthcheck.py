"""Container health check: exit 0 when /readyz on this container's $PORT answers 200."""

import os
import sys
import urllib.request


def main() -> int:
    """Ask the local server whether it is ready."""
    url = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 (loopback only)
            return 0 if response.status == 200 else 1
    except OSError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
