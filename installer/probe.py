"""Run by the *environment's* Python (``doctor``): torch, GPU memory, the package, and a ``hello``
to the server through ``server/client.py``. Prints one JSON line. Never raises."""

import json
import sys


def main() -> None:
    out = {"python": sys.version.split()[0], "executable": sys.executable}
    try:
        import torch

        out.update(torch=torch.__version__, cuda=torch.version.cuda)
        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            out.update(gpu=torch.cuda.get_device_name(0), gpu_free=free, gpu_total=total)
    except Exception as exc:  # a broken torch is what doctor reports
        out["torch_error"] = f"{type(exc).__name__}: {exc}"
    try:
        import warpcore

        out["warpcore"] = warpcore.__version__
    except Exception as exc:
        out["warpcore_error"] = f"{type(exc).__name__}: {exc}"
    address, keys, timeout = sys.argv[1], sys.argv[2] or None, float(sys.argv[3])
    try:
        from server.client import Client
        from server.protocol import PROTOCOL_VERSION

        out["client_protocol"] = PROTOCOL_VERSION
        client = Client(address, curve_keys=keys, connect_timeout=timeout)
        try:
            out["hello"] = client.hello(timeout=timeout)
        finally:
            client.close()
    except Exception as exc:
        out["server_error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
