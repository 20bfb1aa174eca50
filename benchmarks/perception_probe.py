"""Does round 1 see which shapes a video holds? Two measurements of the synthetic world.

Round 1 fails the world's reasoning queries by naming shapes the video does not have
(docs/synthetic-world.md). Each video's round-1 frames are sampled as the chain samples them (8).

`probe`: is the information in the visual tokens? The frames go through a policy's frozen vision
tower and merger (`get_video_features`: one language-model-wide vector per merged patch); a
small MLP scores every token for each of the world's object names, a video's score for a name is
a smooth maximum over its tokens (multiple-instance: present if some token shows it), fitted
with binary cross-entropy on train videos and read on the world's valid and test videos.

`listing`: can round 1 learn to say it when that is all it is taught? Round 1's own prompt asks
for "every shape in the video" (three phrasings), the target is the templated answer whose
description lists the video's objects in the world's fixed order (`synth.queries.listing`); all
weights train (`training.sft.answer_losses`, `--batch` videos a step, warm-up then cosine), and
every `--eval-every` steps it answers greedily on the valid videos.

Both print, as JSON lines, the share of held-out videos whose set of shapes is exactly right,
precision and recall of the names given; `probe` also the exact share when told the count.

`intents`: could a small model answer round 1's reasoning queries from these tokens at all? For
every single-object reasoning expression (fastest, stops first, enters last, leaves, hit, hitter,
static, largest, smallest) a 2-layer transformer reads the video's tokens with learned time, row
and column embeddings (positions for free, which the language model's M-RoPE does not give) and
picks the target among the video's objects, given by name; fitted on the train split, read on
valid + test. Prints held-out accuracy per intent beside chance (one over the object count).
Rows `pixels` (the sampled frames themselves, cut into round 1's 4 x 4 cells: everything is in
them) and `blind` (no tokens: what the names and intent alone give) bound what a row can show.

    python benchmarks/perception_probe.py probe --world runs/world3k --train 3000 \
        --row shipped=revseg-tiny --row random=random --row shipped-224=revseg-tiny@50176
    python benchmarks/perception_probe.py intents --world runs/world3k --row blind=blind \
        --row pixels=pixels --row shipped=revseg-tiny
    python benchmarks/perception_probe.py listing --world runs/world3k --policy revseg-tiny@50176 \
        --work runs/listing-224 --steps 1500 --lr 3e-4

A row or policy is POLICY[@VIDEO_PIXELS]: a policy spec (`revseg-tiny`, a folder) or `random`
(the revseg-tiny architecture at random init), optionally with round 1's frames resized to that
many pixels (`video_pixels` of a recipe).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from revseg_agent.graphs.chats import FRAMES_REF, round1_messages
from revseg_agent.policies.base import VideoFrames
from revseg_agent.policies.qwen import QwenVLPolicy
from revseg_agent.policies.qwen_inputs import Request
from revseg_agent.synth.queries import NAME_PATTERN, NAMES, listing
from revseg_agent.training.frozen_vision import FrozenVision
from revseg_agent.video import open_video

PAIRS = NAMES
LISTING_QUERIES = ("every shape in the video", "all the shapes", "each object in the scene")
#: The keyframe the listing target names (the middle of 8 sampled frames): any fixed choice.
LISTING_KEYFRAME = 4


@dataclass
class Tokens:
    """Visual tokens `(videos, tokens, width)` and which pairs each video holds `(videos, pairs)`."""

    tokens: torch.Tensor
    present: torch.Tensor


def split_meta(split: Path, limit: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The first `limit` videos of a `revseg synth` split's `meta_expressions.json`, in id order:
    the row order of every token tensor here."""
    meta = json.loads((split / "meta_expressions.json").read_text())["videos"]
    return sorted(meta.items())[:limit]


def split_videos(split: Path, limit: int | None = None) -> list[tuple[Path, list[str]]]:
    """(frames folder, names of its objects) per video of a `revseg synth` split, in id order."""
    return [
        (split / "JPEGImages" / vid, [o["name"] for o in v["objects"].values()])
        for vid, v in split_meta(split, limit)
    ]


def standardisation(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each feature's mean and the scale that gives it unit variance, over rows of `flat`."""
    return flat.mean(0), 1 / (flat.std(0) + 1e-6)


def warm_cosine(step: int, steps: int, warmup: int) -> float:
    """The probes' learning-rate factor: linear warm-up over `warmup` steps, cosine to 0."""
    return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))


def round1_request(path: Path, num_frames: int, query: str = LISTING_QUERIES[0]) -> Request:
    """Round 1's chat and frames for the video at `path`, sampled as the chain samples them."""
    video = open_video(path)
    sampled = video.sample(num_frames)
    frames = VideoFrames(video.read(sampled.indices), list(sampled.indices), video.info.fps, video.num_frames)
    return (round1_messages(query, sampled.timestamps), {FRAMES_REF: frames})


def visual_tokens(policy: QwenVLPolicy, videos: list[tuple[Path, list[str]]], num_frames: int = 8) -> Tokens:
    """Round 1's visual tokens of each video through the frozen vision tower and merger."""
    rows, present = [], []
    for path, names in tqdm(videos, desc="tokens", unit="video", leave=False):
        batch = policy.inputs.collate(policy.inputs.rows([round1_request(path, num_frames)]))
        with torch.inference_mode():
            out = policy.model.model.get_video_features(batch["pixel_values_videos"], batch["video_grid_thw"])
        pooled = out.pooler_output if hasattr(out, "pooler_output") else out
        rows.append(torch.cat(list(pooled)) if isinstance(pooled, list | tuple) else pooled)
        present.append(torch.tensor([pair in names for pair in PAIRS], dtype=torch.float32))
    return Tokens(torch.stack(rows).float(), torch.stack(present))


def presence_logits(probe: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """A video's logit per pair: the log-mean-exp of its tokens' scores, a smooth maximum (a hard
    maximum passes gradient to one token and left some pairs unlearned even when one token
    carried them plainly, in the test's planted case)."""
    scores = probe(tokens)
    return torch.logsumexp(scores, 1) - math.log(scores.shape[1])


def fit_probe(train: Tokens, *, steps: int = 1500, hidden: int = 256, seed: int = 0) -> torch.nn.Module:
    """A token-wise MLP whose smooth maximum over a video's tokens is the pair's presence logit."""
    torch.manual_seed(seed)
    width = train.tokens.shape[-1]
    flat = train.tokens.reshape(-1, width)
    standardise = torch.nn.Linear(width, width)  # fixed: each feature to zero mean, unit variance
    with torch.no_grad():
        mean, scale = standardisation(flat)
        standardise.weight.copy_(torch.diag(scale))
        standardise.bias.copy_(-mean * scale)
    standardise.requires_grad_(False)
    probe = torch.nn.Sequential(
        standardise, torch.nn.Linear(width, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, len(PAIRS))
    )
    optimizer = torch.optim.AdamW(
        [p for p in probe.parameters() if p.requires_grad], lr=3e-3, weight_decay=1e-2
    )
    for _ in range(steps):
        pick = torch.randint(len(train.tokens), (min(256, len(train.tokens)),))
        logits = presence_logits(probe, train.tokens[pick])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, train.present[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return probe


def probe_scores(probe: torch.nn.Module, held: Tokens) -> dict[str, float]:
    """Exact-set rate, precision and recall of the probe's sets, and exact when told the count."""
    with torch.no_grad():
        logits = presence_logits(probe, held.tokens)
    truth = held.present
    chosen = (logits > 0).float()
    count = truth.sum(1).long()
    top = torch.zeros_like(truth)
    for k, order in enumerate(logits.argsort(1, descending=True)):
        top[k, order[: int(count[k])]] = 1
    return {
        "exact": round(float((chosen == truth).all(1).float().mean()), 3),
        "precision": round(float((chosen * truth).sum() / chosen.sum().clamp(min=1)), 3),
        "recall": round(float((chosen * truth).sum() / truth.sum()), 3),
        "exact_given_count": round(float((top == truth).all(1).float().mean()), 3),
    }


def load_row(spec: str, work: Path) -> QwenVLPolicy:
    """`random`, `revseg-tiny` or a folder, optionally `@PIXELS` for round 1's frames."""
    from revseg_agent.specs import PolicySpec
    from revseg_agent.synth.policy import build_revseg_tiny

    name, _, pixels = spec.partition("@")
    if name == "random":
        path = str(build_revseg_tiny(work / "random-init", seed=0, keyframe_pixels=224 * 224))
    else:
        path = PolicySpec.parse(name).source()
    policy = QwenVLPolicy.from_pretrained(path, device="cpu", dtype="float32")
    if pixels:
        policy.inputs.set_video_pixels(int(pixels))
    return policy


def set_scores(named: list[set[str] | None], truth: list[list[str]]) -> dict[str, float]:
    """Exact-set share, precision and recall of the names given (None: no parsed answer)."""
    given = [g or set() for g in named]
    hits = sum(len(g & set(t)) for g, t in zip(given, truth, strict=True))
    return {
        "exact": round(sum(g == set(t) for g, t in zip(given, truth, strict=True)) / len(truth), 3),
        "precision": round(hits / max(1, sum(len(g) for g in given)), 3),
        "recall": round(hits / max(1, sum(len(t) for t in truth)), 3),
        "parsed": round(sum(g is not None for g in named) / len(truth), 3),
    }


def listed_names(
    policy: QwenVLPolicy, videos: list[tuple[Path, list[str]]], num_frames: int = 8
) -> list[set[str] | None]:
    """The object names in round 1's greedy description when asked for every shape."""
    from revseg_agent.parsing import KeyframeAnswer, parse_keyframe_answer
    from revseg_agent.policies.base import SamplingParams

    out: list[set[str] | None] = []
    for path, _ in videos:
        (gen,) = policy.generate(
            *round1_request(path, num_frames), sampling=SamplingParams(max_new_tokens=160)
        )
        answer = parse_keyframe_answer(gen.text, num_frames)
        out.append(
            set(NAME_PATTERN.findall(answer.description)) if isinstance(answer, KeyframeAnswer) else None
        )
    return out


def listing_losses(
    policy: QwenVLPolicy,
    batch: list[tuple[Path, list[str], str]],
    num_frames: int = 8,
    *,
    vision: FrozenVision | None = None,
) -> torch.Tensor:
    """Round 1's cross-entropy `(B,)` of the listing answer for each (video, names, query)."""
    from revseg_agent.training.sft import answer_losses

    rows = policy.inputs.rows([round1_request(path, num_frames, query) for path, _, query in batch])
    answers = [listing_answer(query, names) for _, names, query in batch]
    return answer_losses(policy, rows, answers, vision=vision)


def listing_answer(query: str, names: list[str]) -> str:
    """Round 1's ideal answer to a listing query: templated reasoning, the fixed keyframe, and the
    video's objects in the world's order as the description."""
    from revseg_agent.training.sft import round1_target

    return round1_target(query, LISTING_KEYFRAME, listing(names))


def set_rope(policy: QwenVLPolicy, theta: float | None, slow: int) -> None:
    """Give the language model a new M-RoPE (base `theta`, `slow` near-still temporal
    frequencies; the weights stay): experiments on what the readout needs."""
    from revseg_agent.synth.policy import set_text_rope, text_content_channel_rope

    config = policy.model.config.text_config
    if slow:
        params = text_content_channel_rope(config, slow, theta)
    else:
        current = config.rope_parameters
        base = float(theta if theta is not None else current["rope_theta"])
        params = {"rope_type": "default", "rope_theta": base, "mrope_section": current["mrope_section"]}
    set_text_rope(policy.model, params)


def train_listing(args: argparse.Namespace) -> None:
    """Round 1 taught to list, evaluated on the valid videos; the state (weights, optimizer,
    step) is saved at every evaluation and `--resume` continues from it."""
    import numpy as np

    from revseg_agent.training.optim import build_optimizer, clip_gradients

    state_dir = args.work / "state"
    resumed = args.resume and (state_dir / "step.json").is_file()
    first = json.loads((state_dir / "step.json").read_text())["step"] if resumed else 0
    if resumed:
        policy = QwenVLPolicy.from_pretrained(str(state_dir), device="cpu", dtype="float32")
    else:
        policy = load_row(args.policy, args.work)
        if args.rope_theta is not None or args.rope_slow:
            set_rope(policy, args.rope_theta, args.rope_slow)
    vision = FrozenVision(policy.model) if args.frozen_vision else None
    train = split_videos(args.world / "train", args.train)
    valid = split_videos(args.world / "valid")
    truth = [names for _, names in valid]
    trained = [p for p in policy.model.parameters() if p.requires_grad]
    optimizer = build_optimizer(trained, learning_rate=args.lr, weight_decay=0.01, master_weights=False)
    if resumed:
        optimizer.load_state_dict(torch.load(state_dir / "optimizer.pt", weights_only=True))
    else:
        print(json.dumps({"step": 0, **set_scores(listed_names(policy, valid), truth)}), flush=True)
    started = time.perf_counter()
    for step in range(first, args.steps):
        rng = np.random.default_rng([args.seed, step])
        factor = warm_cosine(step, args.steps, 50)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * max(factor, 0.02)
        batch = []
        for _ in range(args.batch):
            path, names = train[int(rng.integers(len(train)))]
            batch.append((path, names, LISTING_QUERIES[int(rng.integers(len(LISTING_QUERIES)))]))
        policy.model.train()
        loss = listing_losses(policy, batch, vision=vision).mean()
        loss.backward()
        clip_gradients(trained, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            policy.model.eval()
            row = {
                "step": step + 1,
                "loss": round(float(loss.detach()), 4),
                **set_scores(listed_names(policy, valid), truth),
                "minutes": round((time.perf_counter() - started) / 60, 1),
            }
            print(json.dumps(row), flush=True)
            policy.model.save_pretrained(state_dir)
            policy.processor.save_pretrained(state_dir)
            torch.save(optimizer.state_dict(), state_dir / "optimizer.pt")
            (state_dir / "step.json").write_text(json.dumps({"step": step + 1}))


def run_probe(args: argparse.Namespace) -> None:
    train_videos = split_videos(args.world / "train", args.train)
    held_videos = split_videos(args.world / "valid") + split_videos(args.world / "test")
    for row in args.row:
        name, _, spec = row.partition("=")
        policy = load_row(spec, args.work)
        probe = fit_probe(visual_tokens(policy, train_videos))
        scores = probe_scores(probe, visual_tokens(policy, held_videos))
        print(
            json.dumps({"row": name, "train": len(train_videos), "held_out": len(held_videos), **scores}),
            flush=True,
        )


#: Intents whose answer is one of the video's objects (the probe picks it among them).
ONE_OBJECT_INTENTS = (
    "fastest",
    "stops_first",
    "enters_last",
    "leaves",
    "hit",
    "hitter",
    "static",
    "largest",
    "smallest",
)

#: Candidate slots an item has: `synth.scenes` draws 2-4 objects a scene (-1 pads the rest).
MOST_OBJECTS = 4


@dataclass
class IntentItems:
    """Single-object reasoning expressions: the video's row in a token tensor, the intent's
    index, the video's objects as pair indices (-1 pads) and the target's place among them."""

    video: torch.Tensor
    intent: torch.Tensor
    candidates: torch.Tensor
    target: torch.Tensor


def intent_items(split: Path, limit: int | None = None) -> IntentItems:
    """Every single-object reasoning expression of the first `limit` videos of a split (video
    rows in `split_videos` order)."""
    video, intent, candidates, target = [], [], [], []
    for row, (_, v) in enumerate(split_meta(split, limit)):
        ids = sorted(v["objects"], key=int)
        names = [PAIRS.index(v["objects"][i]["name"]) for i in ids]
        for e in v["expressions"].values():
            if e["intent"] not in ONE_OBJECT_INTENTS or len(e["obj_id"]) != 1:
                continue
            video.append(row)
            intent.append(ONE_OBJECT_INTENTS.index(e["intent"]))
            candidates.append(names + [-1] * (MOST_OBJECTS - len(names)))
            target.append(ids.index(str(e["obj_id"][0])))
    return IntentItems(*(torch.tensor(x) for x in (video, intent, candidates, target)))


def pixel_tokens(videos: list[tuple[Path, list[str]]], num_frames: int = 8, cell: int = 28) -> Tokens:
    """A control with everything in it: each sampled frame's `cell` x `cell` squares (round 1's
    merged tokens at its default 112 x 112), average-pooled by 2, as tokens `(t, h, w)` order."""
    rows = []
    for path, _ in tqdm(videos, desc="pixels", unit="video", leave=False):
        video = open_video(path)
        frames = (
            torch.from_numpy(np.stack(video.read(video.sample(num_frames).indices))).float() / 255
        )  # (T, H, W, 3)
        t, h, w, _ = frames.shape
        pooled = torch.nn.functional.avg_pool2d(frames.permute(0, 3, 1, 2), 2)  # (T, 3, H/2, W/2)
        c = cell // 2
        grid = pooled.unfold(2, c, c).unfold(3, c, c)  # (T, 3, h', w', c, c)
        rows.append(grid.permute(0, 2, 3, 1, 4, 5).reshape(t * (h // cell) * (w // cell), -1).half())
    return Tokens(torch.stack(rows), torch.zeros(len(rows), len(PAIRS)))  # half: 20k videos fit


class IntentProbe(torch.nn.Module):
    """A small transformer over a video's tokens (learned time, row and column embeddings) and
    one query per candidate object (its name's embedding plus the intent's); each candidate's
    output scores it. What a model *could* read from the tokens, given positions for free."""

    def __init__(self, tokens: torch.Tensor, grid: tuple[int, int, int], width: int = 64, layers: int = 2):
        super().__init__()
        mean, scale = standardisation(tokens[:2000].reshape(-1, tokens.shape[-1]).float())
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)
        t, h, w = grid
        self.project = torch.nn.Linear(tokens.shape[-1], width)
        self.time = torch.nn.Parameter(torch.randn(t, 1, 1, width) * 0.02)
        self.row = torch.nn.Parameter(torch.randn(1, h, 1, width) * 0.02)
        self.col = torch.nn.Parameter(torch.randn(1, 1, w, width) * 0.02)
        self.names = torch.nn.Embedding(len(PAIRS), width)
        self.intents = torch.nn.Embedding(len(ONE_OBJECT_INTENTS), width)
        layer = torch.nn.TransformerEncoderLayer(
            width, 4, 4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.score = torch.nn.Linear(width, 1)

    def forward(self, tokens: torch.Tensor, intent: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        x = self.project((tokens.float() - self.mean) * self.scale)
        x = x + (self.time + self.row + self.col).reshape(1, -1, x.shape[-1])
        pad = candidates < 0
        queries = self.names(candidates.clamp(min=0)) + self.intents(intent)[:, None]
        seq = torch.cat([queries, x], 1)
        mask = torch.cat([pad, torch.zeros(x.shape[:2], dtype=torch.bool)], 1)
        out = self.encoder(seq, src_key_padding_mask=mask)
        return self.score(out[:, : candidates.shape[1]]).squeeze(-1).masked_fill(pad, float("-inf"))


def fit_intent_probe(
    tokens: torch.Tensor,
    items: IntentItems,
    grid: tuple[int, int, int],
    *,
    steps: int,
    batch: int = 64,
    width: int = 64,
    layers: int = 2,
    seed: int = 0,
) -> IntentProbe:
    torch.manual_seed(seed)
    probe = IntentProbe(tokens, grid, width, layers)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-3, weight_decay=1e-2)
    for step in tqdm(range(steps), desc="intent probe", unit="step", leave=False):
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * warm_cosine(step, steps, 100)
        pick = torch.randint(len(items.video), (batch,))
        logits = probe(tokens[items.video[pick]], items.intent[pick], items.candidates[pick])
        loss = torch.nn.functional.cross_entropy(logits, items.target[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return probe


def intent_scores(probe: IntentProbe, tokens: torch.Tensor, items: IntentItems) -> dict[str, Any]:
    """Held-out accuracy per intent beside chance (one over the video's object count)."""
    with torch.no_grad():
        chosen = torch.cat(
            [
                probe(
                    tokens[items.video[k : k + 256]], items.intent[k : k + 256], items.candidates[k : k + 256]
                ).argmax(1)
                for k in range(0, len(items.video), 256)
            ]
        )
    right = (chosen == items.target).float()
    chance = 1 / (items.candidates >= 0).sum(1).float()
    out: dict[str, Any] = {"all": [round(float(right.mean()), 3), round(float(chance.mean()), 3)]}
    for k, name in enumerate(ONE_OBJECT_INTENTS):
        sel = items.intent == k
        if sel.any():
            out[name] = [
                round(float(right[sel].mean()), 3),
                round(float(chance[sel].mean()), 3),
                int(sel.sum()),
            ]
    return out


def token_grid(policy: QwenVLPolicy, path: Path, num_frames: int = 8) -> tuple[int, int, int]:
    """Round 1's merged token grid (time, rows, columns) for the video at `path`."""
    batch = policy.inputs.collate(policy.inputs.rows([round1_request(path, num_frames)]))
    t, h, w = (int(x) for x in batch["video_grid_thw"][0])
    merge = policy.model.config.vision_config.spatial_merge_size
    return t, h // merge, w // merge


def run_intents(args: argparse.Namespace) -> None:
    train_videos = split_videos(args.world / "train", args.train)
    valid_videos = split_videos(args.world / "valid")
    held_videos = valid_videos + split_videos(args.world / "test")
    train_items = intent_items(args.world / "train", args.train)
    valid_items = intent_items(args.world / "valid")
    test_items = intent_items(args.world / "test")
    held_items = IntentItems(
        torch.cat([valid_items.video, test_items.video + len(valid_videos)]),
        *(
            torch.cat([getattr(valid_items, f), getattr(test_items, f)])
            for f in ("intent", "candidates", "target")
        ),
    )
    for row in args.row:
        name, _, spec = row.partition("=")
        if spec in ("pixels", "blind"):
            grid = (8, 4, 4)  # 8 sampled frames of the world's 112 x 112 in 28-pixel cells
            if spec == "pixels":
                train, held = pixel_tokens(train_videos).tokens, pixel_tokens(held_videos).tokens
            else:
                train, held = (torch.zeros(len(v), math.prod(grid), 1) for v in (train_videos, held_videos))
        else:
            policy = load_row(spec, args.work)
            grid = token_grid(policy, train_videos[0][0])
            train, held = (
                visual_tokens(policy, train_videos).tokens,
                visual_tokens(policy, held_videos).tokens,
            )
        probe = fit_intent_probe(
            train, train_items, grid, steps=args.steps, batch=args.batch, width=args.width, layers=args.layers
        )
        print(
            json.dumps(
                {
                    "row": name,
                    "train_expressions": len(train_items.video),
                    "held_out": intent_scores(probe, held, held_items),
                    "train": intent_scores(probe, train, train_items)["all"],
                }
            ),
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    modes = parser.add_subparsers(dest="mode", required=True)
    probe = modes.add_parser("probe", help="fit a probe on frozen visual tokens")
    probe.add_argument("--row", action="append", required=True, help="NAME=POLICY[@VIDEO_PIXELS]")
    intents = modes.add_parser("intents", help="could a small model read each intent's answer?")
    intents.add_argument("--row", action="append", required=True, help="NAME=POLICY[@PIXELS]|pixels|blind")
    intents.add_argument("--steps", type=int, default=3000)
    intents.add_argument("--batch", type=int, default=64)
    intents.add_argument("--width", type=int, default=64, help="the probe transformer's width")
    intents.add_argument("--layers", type=int, default=2, help="the probe transformer's layers")
    listing_mode = modes.add_parser("listing", help="teach round 1 to list the shapes")
    listing_mode.add_argument("--policy", default="revseg-tiny", help="POLICY[@VIDEO_PIXELS]")
    listing_mode.add_argument("--steps", type=int, default=1500)
    listing_mode.add_argument("--lr", type=float, default=3e-4)
    listing_mode.add_argument("--batch", type=int, default=8)
    listing_mode.add_argument("--eval-every", type=int, default=250)
    listing_mode.add_argument("--seed", type=int, default=7)
    listing_mode.add_argument("--frozen-vision", action="store_true", help="train the language model alone")
    listing_mode.add_argument("--rope-theta", type=float, default=None, help="a new M-RoPE base")
    listing_mode.add_argument(
        "--rope-slow",
        type=int,
        default=0,
        help="near-still temporal M-RoPE frequencies (content_channel_rope)",
    )
    listing_mode.add_argument("--resume", action="store_true", help="continue the state under --work")
    for mode in (probe, intents, listing_mode):
        mode.add_argument("--world", type=Path, required=True, help="a `revseg synth` folder")
        mode.add_argument("--train", type=int, default=3000, help="train videos used")
        mode.add_argument("--work", type=Path, default=Path("runs/perception"))
        mode.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    {"probe": run_probe, "intents": run_intents, "listing": train_listing}[args.mode](args)


if __name__ == "__main__":
    main()
