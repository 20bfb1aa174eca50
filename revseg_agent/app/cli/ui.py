"""`revseg ui`: the browser step-through, with its network and login checks."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from revseg_agent.access import is_loopback
from revseg_agent.errors import InputError
from revseg_agent.graphs.registry import check_device, check_policy_spec, load_policy, load_tracker
from revseg_agent.specs import TrackerSpec


def add_commands(sub: Any) -> None:
    """ui"""
    ui = sub.add_parser("ui", help="step through the chain in a browser page (Gradio; pip install .[ui])")
    ui.add_argument(
        "--policy",
        action="append",
        help="policy spec offered in the page (repeat for several); default: revseg-tiny",
    )
    ui.add_argument("--tracker", choices=["classical", "sam2"], action="append", help="default: classical")
    ui.add_argument("--sam2-checkpoint", help="SAM2 checkpoint (.pt) for --tracker sam2; default: the hub's")
    ui.add_argument("--sam2-config", default=None, help="sam2 config name")
    ui.add_argument("--sam2-image-size", type=int, help="lower SAM2's input size (default 1024)")
    ui.add_argument("--frames", type=int, default=8, help="frames sampled for round 1")
    ui.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    ui.add_argument("--work", type=Path, default=Path("revseg-ui"), help="runs, their files and runs.sqlite")
    ui.add_argument(
        "--host",
        default="127.0.0.1",
        help="default: loopback only; any other address needs --auth (see the README's Security)",
    )
    ui.add_argument("--port", type=int, default=7860)
    ui.add_argument(
        "--auth",
        metavar="USER:PASSWORD",
        help="the page's login (Gradio's); default: the REVSEG_UI_AUTH variable; required beyond loopback",
    )
    ui.add_argument(
        "--allow-dir",
        action="append",
        type=Path,
        metavar="DIR",
        help="a folder whose videos the page may open by path (repeat for several); default: any "
        "path on loopback, none beyond it (uploads and generated clips always work)",
    )
    ui.add_argument("--max-upload-mb", type=float, default=500.0, help="largest upload the page stores")

    ui.set_defaults(run=run_ui)


def run_ui(args: argparse.Namespace) -> int:
    try:
        from revseg_agent.app.ui.app import launch
    except ImportError as exc:
        raise InputError(f"the browser UI needs Gradio: pip install -e .[ui] ({exc})") from exc

    if args.frames < 1:
        raise InputError(f"--frames must be at least 1, got {args.frames}")
    if not 1 <= args.port <= 65535:
        raise InputError(f"--port must be between 1 and 65535, got {args.port}")
    if args.max_upload_mb <= 0:
        raise InputError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    auth = _ui_auth(args.auth)
    if not is_loopback(args.host) and auth is None:
        raise InputError(
            f"--host {args.host} serves the page to the network: give a login with --auth USER:PASSWORD "
            "(or the REVSEG_UI_AUTH variable), or keep the default 127.0.0.1"
        )
    for folder in args.allow_dir or []:
        if not folder.is_dir():
            raise InputError(f"--allow-dir {folder} is not a folder")
    check_device(args.device)
    specs = args.policy or ["revseg-tiny"]
    for spec in specs:
        check_policy_spec(spec)
    trackers: dict[str, Any] = {}
    for kind in args.tracker or ["classical"]:
        tracker = TrackerSpec.from_options(kind, checkpoint=args.sam2_checkpoint, config=args.sam2_config)
        # the weight-free tracker is cheap to build per run; SAM2 loads once, here
        trackers[kind] = (
            tracker.text
            if kind == "classical"
            else load_tracker(tracker.text, args.device, args.sam2_image_size)
        )
    policies = {spec: load_policy(spec, device=args.device) for spec in specs}
    print(f"revseg ui on http://{args.host}:{args.port} (runs in {args.work}); Ctrl+C stops it")
    try:
        launch(
            args.work,
            policies=policies,
            trackers=trackers,
            host=args.host,
            port=args.port,
            num_frames=args.frames,
            auth=auth,
            allowed_dirs=args.allow_dir,
            max_upload_mb=args.max_upload_mb,
        )
    except OSError as exc:  # the port is taken, the address is not this machine's
        raise InputError(f"cannot serve on {args.host}:{args.port}: {exc}") from exc
    return 0


def _ui_auth(given: str | None) -> tuple[str, str] | None:
    """`USER:PASSWORD` from `--auth` or `REVSEG_UI_AUTH`, checked (None when neither is set)."""
    import os

    raw = given if given is not None else os.environ.get("REVSEG_UI_AUTH")
    if raw is None:
        return None
    user, sep, password = raw.partition(":")
    if not sep or not user or not password:
        raise InputError("--auth (or REVSEG_UI_AUTH) must be USER:PASSWORD, both non-empty")
    return user, password
