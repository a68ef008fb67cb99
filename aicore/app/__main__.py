"""``python -m aicore.app --runs runs --data data [--host 127.0.0.1] [--port 8765]``."""
from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", default="runs", help="runs folder (default: runs)")
    p.add_argument("--data", default="data", help="data folder (default: data)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; any other needs a token)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--token", default=None,
                   help="access token (required off 127.0.0.1; generated when not given)")
    p.add_argument("--max-upload-mb", type=int, default=20)


DESCRIPTION = "AICore app: runs, reports, thresholds, data, predict and launch in a local web page"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m aicore.app", description=DESCRIPTION)
    add_arguments(p)
    serve(p.parse_args(argv))


def serve(args: argparse.Namespace) -> None:
    """Check the arguments (one error line, exit 2) and run the app until interrupted."""
    runs = Path(args.runs)
    if runs.exists() and not runs.is_dir():
        print(f"error: --runs {runs} is not a folder; give the folder your runs are in",
              file=sys.stderr)
        sys.exit(2)
    data = Path(args.data)
    if not data.is_dir():
        print(f"error: --data {data} is not a folder; give the folder holding your data sets "
              f"(python -m aicore.tools.demo_data {data} makes the demo ones)", file=sys.stderr)
        sys.exit(2)
    if args.max_upload_mb < 1:
        print("error: --max-upload-mb must be 1 or more", file=sys.stderr)
        sys.exit(2)
    local = args.host in ("127.0.0.1", "localhost", "::1")
    token = args.token
    if not local and not token:
        token = secrets.token_urlsafe(24)
    import uvicorn

    from aicore.app.server import create_app
    app = create_app(runs, data, token=token, max_upload=args.max_upload_mb * 1024 * 1024)
    url = f"http://{args.host}:{args.port}/" + (f"?token={token}" if token else "")
    print(f"AICore app on {url}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
