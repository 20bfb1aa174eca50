"""`revseg ui`: the chain in a browser page (Gradio), over `RunBook`.

Every button is also a named API endpoint (`/start`, `/step`, `/run`, `/set_keyframe`,
`/set_description`, `/set_box`, `/open`, `/runs`, `/generate`), so Gradio's Python client drives
exactly what the page does. Each endpoint takes the run id and returns the page's outputs, the
last of which is the run as JSON (`RunView.to_json`). Bad input never raises into the server: it
comes back as the status message, with the run left as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import gradio as gr  # an optional extra (`pip install -e .[ui]`): import this module only for the UI

from revseg_agent.access import is_loopback
from revseg_agent.app.ui.runs import STAGES, PolicyLike, RunBook, RunView, TrackerLike
from revseg_agent.errors import RevsegError

logger = logging.getLogger(__name__)

#: The page's login as `user:password`, read by `revseg ui` when `--auth` is not given.
AUTH_ENV = "REVSEG_UI_AUTH"
#: Largest upload the page stores (MB).
DEFAULT_MAX_UPLOAD_MB = 500.0

#: The page's outputs, in the order every handler returns them.
OUTPUT_NAMES = (
    "run_id",
    "status",
    "strip",
    "thinking",
    "answer",
    "keyframe",
    "description",
    "keyframe_image",
    "x1",
    "y1",
    "x2",
    "y2",
    "overlay_video",
    "overlay_frames",
    "downloads",
    "run_json",
)

INTRO = """# revseg: step through the reasoning chain
Give a video and a query. Round 1 reads sampled frames and picks a **keyframe** and an object
**description**; round 2 draws a **box** on the keyframe; the tracker propagates a mask through
the video. Step node by node to check and correct the keyframe, the description or the box
(click two corners on the keyframe to redraw it), or run straight through."""


def _outputs(view: RunView | None, status: str) -> tuple[Any, ...]:
    if view is None:
        return ("", status, [], "", "", None, "", None, None, None, None, None, None, [], [], {})
    box: list[float | None] = list(view.boxes[0]) if view.boxes else [None] * 4
    return (
        view.run_id,
        status,
        view.strip,
        view.thinking or "",
        view.answer or "",
        view.keyframe_index,
        view.description or "",
        view.keyframe_image,
        *box,
        view.overlay_video,
        view.overlay_frames,
        view.downloads,
        view.to_json(),
    )


def _status(view: RunView) -> str:
    head = f"**run {view.run_id}** · stage: **{view.stage}** — {STAGES[view.stage]}"
    if view.next_nodes:
        head += f" · next node: `{', '.join(view.next_nodes)}`"
    if view.error:
        head += f"\n\n⚠ {view.error}"
    if view.edits:
        head += "\n\nyour edits: " + "; ".join(f"{e['key']} → {e['new']}" for e in view.edits)
    return head


def build_app(book: RunBook, *, generated_dir: Path | None = None) -> Any:
    """The Gradio Blocks page over `book` (not launched)."""
    generated_dir = generated_dir or book.work_dir / "generated"

    def guarded(fn: Callable[..., RunView], run_id_arg: bool = True) -> Callable[..., tuple[Any, ...]]:
        """A handler that reports bad input in the page and leaves the run as it was."""

        def handler(*args: Any) -> tuple[Any, ...]:
            run_id = args[0] if run_id_arg and args else ""
            try:
                view = fn(*args)
                return _outputs(view, _status(view))
            except (RevsegError, ValueError) as exc:
                message = f"⚠ {exc}"
            except Exception as exc:  # the server must stay up: report, log, carry on
                logger.exception("UI handler failed")
                message = f"⚠ internal error: {type(exc).__name__}: {exc}"
            try:
                return _outputs(book.view(run_id), message) if run_id else _outputs(None, message)
            except RevsegError:
                return _outputs(None, message)

        return handler

    def progress_for(progress: Any) -> Callable[[int, int], None]:
        return lambda done, total: progress((done, total), desc="tracking", unit="frames")

    def start(
        upload: str | None,
        path: str,
        query: str,
        policy: str,
        tracker: str,
        progress: Any = gr.Progress(),  # noqa: B008 - Gradio's documented way to get a bar
    ) -> RunView:
        video = upload or (path or "").strip()
        return book.start(video, query, policy=policy, tracker=tracker, progress=progress_for(progress))

    def step(run_id: str, progress: Any = gr.Progress()) -> RunView:  # noqa: B008
        return book.step(run_id, progress=progress_for(progress))

    def run(run_id: str, progress: Any = gr.Progress()) -> RunView:  # noqa: B008
        return book.run(run_id, progress=progress_for(progress))

    def set_keyframe(run_id: str, keyframe: float | None) -> RunView:
        if keyframe is None:
            raise ValueError("give the keyframe's frame number")
        return book.edit(run_id, "keyframe_index", keyframe)

    def set_description(run_id: str, description: str) -> RunView:
        return book.edit(run_id, "description", description)

    def set_box(
        run_id: str, x1: float | None, y1: float | None, x2: float | None, y2: float | None
    ) -> RunView:
        if None in (x1, y1, x2, y2):
            raise ValueError("give all four box coordinates (x1, y1, x2, y2)")
        return book.edit(run_id, "boxes", [[x1, y1, x2, y2]])

    def open_run(run_id: str) -> RunView:
        return book.view((run_id or "").strip())

    def list_runs() -> list[list[Any]]:
        return [[r.run_id, r.query, Path(r.video).name, r.policy, r.tracker] for r in book.runs()]

    def generate(seed: float | None) -> tuple[str, str]:
        from revseg_agent.app.demo import demo_scene, write_frames

        s = int(seed or 0)
        scene, query = demo_scene(s)
        folder = write_frames(generated_dir / f"seed-{s}", scene)
        return str(folder), query.text

    def click_box(run_id: str, corner: list[float] | None, evt: gr.SelectData) -> tuple[Any, ...]:
        x, y = (float(v) for v in evt.index)
        if not corner:
            view = book.view(run_id)
            return (*_outputs(view, f"first corner at ({x:.0f}, {y:.0f}): click the opposite corner"), [x, y])
        x0, y0 = corner
        box = [min(x0, x), min(y0, y), max(x0, x), max(y0, y)]
        out = guarded(lambda rid: book.edit(rid, "boxes", [box]))(run_id)
        return (*out, None)

    def on_load(request: gr.Request) -> tuple[Any, ...]:
        run_id = dict(request.query_params).get("run", "") if request else ""
        if not run_id:
            return _outputs(None, "Start a run: a video, a query, then Start.")
        return guarded(open_run)(run_id)

    with gr.Blocks(title="revseg") as app:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=2):
                upload = gr.File(label="Upload a video", file_types=["video"], type="filepath")
                path = gr.Textbox(label="…or a video file / frame folder on this machine")
                with gr.Row():
                    seed = gr.Number(label="…or a generated clip: seed", value=0, precision=0)
                    generate_btn = gr.Button("Generate clip")
            with gr.Column(scale=2):
                query = gr.Textbox(label="Query", placeholder="the shape that stops moving first")
                policy = gr.Dropdown(list(book.policies), value=next(iter(book.policies)), label="Policy")
                tracker = gr.Dropdown(list(book.trackers), value=next(iter(book.trackers)), label="Tracker")
                start_btn = gr.Button("Start (runs the first node)", variant="primary")
        with gr.Row():
            run_id = gr.Textbox(label="Run id", interactive=True, scale=3)
            open_btn = gr.Button("Open run", scale=1)
            step_btn = gr.Button("Next node", scale=1)
            run_btn = gr.Button("Run to the end", variant="primary", scale=1)
        status = gr.Markdown()
        gr.Markdown("## Round 1: sampled frames, keyframe and description")
        strip = gr.Gallery(
            label="Sampled frames (the keyframe has a red border)",
            columns=8,
            height=230,
            object_fit="contain",
        )
        with gr.Row():
            thinking = gr.Textbox(label="Thinking", lines=3, interactive=False)
            answer = gr.Textbox(label="Answer (round 1 completion)", lines=3, interactive=False)
        with gr.Row():
            keyframe = gr.Number(label="Keyframe (frame number)", precision=0)
            keyframe_btn = gr.Button("Use this keyframe")
            description = gr.Textbox(label="Object description")
            description_btn = gr.Button("Use this description")
        gr.Markdown("## Round 2: the box on the keyframe (click two corners to redraw it)")
        keyframe_image = gr.Image(label="Keyframe with the box", type="filepath", interactive=False)
        corner = gr.State(None)
        with gr.Row():
            x1, y1, x2, y2 = (gr.Number(label=n) for n in ("x1", "y1", "x2", "y2"))
            box_btn = gr.Button("Use this box")
        gr.Markdown("## Tracking: the mask on every frame")
        overlay_video = gr.Video(label="Overlay", interactive=False, height=360)
        overlay_frames = gr.Gallery(
            label="Masks on frames across the video", columns=6, height=260, object_fit="contain"
        )
        downloads = gr.File(label="Downloads: masks.json, overlay.mp4, trace.json", file_count="multiple")
        run_json = gr.JSON(label="Run (as JSON)")
        with gr.Accordion("Earlier runs", open=False):
            runs_table = gr.Dataframe(
                headers=["run id", "query", "video", "policy", "tracker"], interactive=False
            )
            runs_btn = gr.Button("List runs")

        outputs = [
            run_id,
            status,
            strip,
            thinking,
            answer,
            keyframe,
            description,
            keyframe_image,
            x1,
            y1,
            x2,
            y2,
            overlay_video,
            overlay_frames,
            downloads,
            run_json,
        ]
        assert len(outputs) == len(OUTPUT_NAMES)
        start_btn.click(
            guarded(start, run_id_arg=False),
            [upload, path, query, policy, tracker],
            outputs,
            api_name="start",
        )
        step_btn.click(guarded(step), [run_id], outputs, api_name="step")
        run_btn.click(guarded(run), [run_id], outputs, api_name="run")
        open_btn.click(guarded(open_run), [run_id], outputs, api_name="open")
        keyframe_btn.click(guarded(set_keyframe), [run_id, keyframe], outputs, api_name="set_keyframe")
        description_btn.click(
            guarded(set_description), [run_id, description], outputs, api_name="set_description"
        )
        box_btn.click(guarded(set_box), [run_id, x1, y1, x2, y2], outputs, api_name="set_box")
        keyframe_image.select(click_box, [run_id, corner], [*outputs, corner], api_visibility="private")
        runs_btn.click(list_runs, None, runs_table, api_name="runs")
        generate_btn.click(generate, [seed], [path, query], api_name="generate")
        app.load(on_load, None, outputs, api_visibility="private", queue=False)
    return app


def launch(
    work_dir: str | Path,
    *,
    policies: Mapping[str, PolicyLike],
    trackers: Mapping[str, TrackerLike],
    host: str = "127.0.0.1",
    port: int = 7860,
    block: bool = True,
    auth: tuple[str, str] | None = None,
    allowed_dirs: Sequence[str | Path] | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    **book_options: Any,
) -> Any:
    """Build the runs' book and the page, and serve it (on loopback unless told otherwise).

    Beyond loopback the page needs `auth` (Gradio's own login) and reads machine paths only under
    `allowed_dirs` (uploads and generated clips always work); `ValueError` otherwise. Uploads
    over `max_upload_mb` are refused by Gradio before they are stored.
    """
    if not is_loopback(host):
        if auth is None:
            raise ValueError(
                f"serving on {host} opens the page to the network: give a login (--auth USER:PASSWORD "
                f"or {AUTH_ENV}), or serve on 127.0.0.1"
            )
        if allowed_dirs is None:
            allowed_dirs = []  # beyond loopback: no machine paths unless named
    if allowed_dirs is not None:
        allowed_dirs = [*allowed_dirs, gr.utils.get_upload_folder()]  # what Gradio stored
    book = RunBook(work_dir, policies=policies, trackers=trackers, allowed_dirs=allowed_dirs, **book_options)
    app = build_app(book)
    app.revseg_book = book  # the runs behind the page, for callers that hold the app
    app.queue(default_concurrency_limit=4)
    app.launch(
        server_name=host,
        server_port=port,
        allowed_paths=[str(book.work_dir)],
        prevent_thread_lock=not block,
        show_error=True,
        quiet=not block,
        auth=auth,
        max_file_size=int(max_upload_mb * 1024 * 1024),
    )
    return app
