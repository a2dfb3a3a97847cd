"""The images' HEALTHCHECK: exit 0 when the server's /health answers 200 (the model is loaded),
else print why and exit 1. Standard library only; the port is $INTROLLM_PORT, as in start.sh."""

import os
import sys
import urllib.error
import urllib.request

url = f"http://127.0.0.1:{os.environ.get('INTROLLM_PORT') or 8000}/health"
try:
    with urllib.request.urlopen(url, timeout=5) as response:
        sys.exit(0 if response.status == 200 else 1)
except urllib.error.HTTPError as e:  # 503: still loading, or the load failed (the body says which)
    print(f"{url}: {e.code} {e.read().decode(errors='replace')[:500]}")
except Exception as e:  # refused while starting, timeout
    print(f"{url}: {e}")
sys.exit(1)
