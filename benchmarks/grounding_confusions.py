"""Where does round 2's box land when it misses? Round 2 alone, per named object, by what the
boxed object shares with the target.

For every object of a synthetic-world split that an expression refers to (`eval.grounding.
scene_items`: the frame where it is largest, its name as the label), each policy answers round 2's
prompt alone, greedily; the box is classed by the object it overlaps most (`eval.grounding.
landing`): the target, another shape of the target's shape (another colour), another of its
colour (another shape), another object, the floor, or no box. Counted over all items and over
those where another object of the target's shape is in view (where a policy that reads the shape
and not the colour is at a coin flip).

Measured on the valid split (91 objects, session 24), the revseg-tiny shipped in session 23:
target 64 / 91; where another object of the target's shape was in view, target 15 / 28 and that
other shape 12 / 28 (colour was read no better than a coin flip).

Then, per policy, whether the box depends on each word of the name (`word_gaps`): the
teacher-forced loss of the target's box after the name of another object in view that shares
the target's shape (or colour), minus after the target's own name.
Measured (session 25, valid; 34 same-shape pairs, 18 same-colour pairs): the colour word's gap
-0.0002 (session 23's SFT policy) and -0.0003 (shipped), the shape word's +0.155 and +0.143:
round 2's box does not depend on the colour word at all (docs/synthetic-world.md, session 25).

With `--probe-train runs/world/train`: is it the eyes or the reading? Each object's own merged
token of round 2's keyframe (the 8 x 8 grid of the 224 x 224 image, the cell of the object's box
centre) through the policy's frozen vision tower and merger; a small MLP fitted on the train
split's objects (the first 600 frames) tells that token's colour (6-way) and shape (3-way), read
on the split's objects; the row `pixels` does the same from the cell's own pixels (mean, spread,
extremes of its 14 x 14 x 3 source pixels).
Measured (session 24; 1,352 train / 196 valid object views): colour 0.91 and shape 0.71 held out
from session 23's SFT policy's tokens, 0.92 / 0.70 from the shipped one's, 0.92 / 0.43 from the
pixels: the colour is in the token at the object's cell, so the miss is in reading it (binding
the named colour to the named shape), not in seeing it.

With `--probe-train` also the readout (`first_digit_states`): each decoder layer's input at the
position that writes the box's first digit, probed for the *named* colour and shape (the probe
MLP, fitted on the train split's first 150 frames). Measured (session 25, session 23's SFT
policy, valid): named shape 0.30 / 1.00 / 1.00 / 1.00 at layers 0-3, named colour 0.13 / 0.45 /
0.15 / 0.20 (chance 0.17): the box is computed from a state that knows the shape asked for and
not the colour.

Usage: python benchmarks/grounding_confusions.py --split runs/world/valid --policy NAME=SPEC [...]
           [--probe-train runs/world/train]
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Callable

import numpy as np
import torch

from revseg_agent.eval.grounding import LANDINGS, SceneItem, answer_box, landing, scene_items
from revseg_agent.graphs.chats import KEYFRAME_REF, round2_messages
from revseg_agent.graphs.registry import load_policy
from revseg_agent.policies.base import ImageFrame
from revseg_agent.policies.qwen import QwenVLPolicy
from revseg_agent.synth.policy import keyframe_tokens
from revseg_agent.synth.scenes import COLOURS, SHAPES, name_classes, name_parts
from revseg_agent.training.sft import keyframe_box_losses
from revseg_agent.types import Box

#: The keyframe's merged-token grid (224 x 224 image: 8 x 8 tokens of 14 source pixels).
GRID = 8


#: A box loss: (frame, label named in the prompt, the box to score) -> teacher-forced loss.
BoxLoss = Callable[[np.ndarray, str, Box], float]


def word_gaps(items: list[SceneItem], box_loss: BoxLoss) -> dict[str, tuple[float, int]]:
    """Does round 2 read each word of the name? Per item, for each other object in view that
    shares one word with the target, the loss of the *target's* box after that object's name
    minus after the target's own: the colour word's gap over objects of the target's shape
    (only the colour tells them apart), the shape word's over objects of its colour. A gap of 0
    means the box does not depend on that word at all. Returns kind -> (mean gap, pairs)."""
    gaps: dict[str, list[float]] = {"colour word": [], "shape word": []}
    for item in items:
        colour, shape = name_parts(item.label)
        own: float | None = None
        for other in item.boxes:
            if other == item.label:
                continue
            other_colour, other_shape = name_parts(other)
            kind = "colour word" if other_shape == shape else "shape word" if other_colour == colour else None
            if kind is None:
                continue
            own = box_loss(item.frame, item.label, item.boxes[item.label]) if own is None else own
            gaps[kind].append(box_loss(item.frame, other, item.boxes[item.label]) - own)
    return {
        kind: (float(np.mean(values)) if values else float("nan"), len(values))
        for kind, values in gaps.items()
    }


def policy_box_loss(policy: QwenVLPolicy) -> BoxLoss:
    """`BoxLoss` of a policy: round 2's supervised loss (`training.sft.keyframe_box_losses`)."""

    def loss(frame: np.ndarray, label: str, box: Box) -> float:
        with torch.inference_mode():
            return float(keyframe_box_losses(policy, [(frame, label, [box])])[0])

    return loss


def first_digit_token(answer: str, offsets: list[tuple[int, int]]) -> int:
    """The index of the token that starts the box's first coordinate in a round-2 answer (the
    tokenizer's character `offsets` of each token)."""
    first = answer.index("[", answer.index("bbox_2d")) + 1
    return next(k for k, (start, _) in enumerate(offsets) if start >= first)


def first_digit_states(policy: QwenVLPolicy, items: list[SceneItem]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per object view, each decoder layer's input at the position that writes the box's first
    digit (teacher-forced on the object's own name and box) `(views, layers, width)`, and the
    named colour and shape indices `(views, 2)`: what the box is computed from."""
    from revseg_agent.policies.qwen_inputs import TokenRow
    from revseg_agent.training.sft import box_answer

    layers = policy.model.model.language_model.layers
    tokenizer = policy.processor.tokenizer
    captured: dict[int, torch.Tensor] = {}
    hooks = [
        layer.register_forward_pre_hook(lambda _m, args, k=k: captured.__setitem__(k, args[0]))
        for k, layer in enumerate(layers)
    ]
    states, labels = [], []
    try:
        for item in items:
            for name, box in item.boxes.items():
                row = policy.inputs.rows([(round2_messages(name), {KEYFRAME_REF: ImageFrame(item.frame)})])[0]
                answer = box_answer(policy, row, (item.frame.shape[0], item.frame.shape[1]), [box], name)
                encoded = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
                digit = first_digit_token(answer, encoded["offset_mapping"])
                batch = policy.inputs.collate([row + TokenRow.text(encoded["input_ids"])])
                with torch.inference_mode():
                    captured.clear()
                    policy.model(**batch)
                position = batch["input_ids"].shape[1] - len(encoded["input_ids"]) + digit - 1
                states.append(torch.stack([captured[k][0, position].float() for k in range(len(layers))]))
                labels.append(name_classes(name))
    finally:
        for hook in hooks:
            hook.remove()
    return torch.stack(states), torch.tensor(labels)


def print_readout(
    rows: list[tuple[str, QwenVLPolicy]], train: list[SceneItem], held: list[SceneItem]
) -> None:
    """Per policy and layer: how well the named colour and shape can be read (held out, the
    probe MLP) from the state that writes the box's first digit."""
    print("\n| policy | layer | named colour | named shape |")
    print("|---|---|---|---|")
    for name, policy in rows:
        x, y = first_digit_states(policy, train)
        hx, hy = first_digit_states(policy, held)
        for layer in range(x.shape[1]):
            colour = probe_accuracy(x[:, layer], y[:, 0], hx[:, layer], hy[:, 0], len(COLOURS))
            shape = probe_accuracy(x[:, layer], y[:, 1], hx[:, layer], hy[:, 1], len(SHAPES))
            print(f"| {name} | {layer} | {colour:.2f} | {shape:.2f} |")


def has_twin(label: str, names: list[str]) -> bool:
    """Another object of the label's shape is in view."""
    return any(n != label and name_parts(n)[1] == name_parts(label)[1] for n in names)


def cell_features(
    policy: QwenVLPolicy | None, items: list[SceneItem]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per object view: the feature of its cell (the policy's merged keyframe token, or with no
    policy the cell's pixel statistics), its colour index and its shape index."""
    rows, colours, shapes = [], [], []
    for item in items:
        tokens = None
        if policy is not None:
            with torch.inference_mode():
                tokens = keyframe_tokens(policy, item.frame, item.label).float()
        height, width = item.frame.shape[:2]
        for name, box in item.boxes.items():
            fy, fx = (box.y1 + box.y2) / 2 / height, (box.x1 + box.x2) / 2 / width
            if tokens is not None:
                rows.append(tokens[int(fy * tokens.shape[0]), int(fx * tokens.shape[1])])
            else:
                r, c, size = int(fy * GRID), int(fx * GRID), height // GRID
                cell = item.frame[r * size : (r + 1) * size, c * size : (c + 1) * size].reshape(-1, 3) / 255.0
                stats = np.concatenate([cell.mean(0), cell.std(0), cell.max(0), cell.min(0)])
                rows.append(torch.tensor(stats, dtype=torch.float32))
            colour, shape = name_classes(name)
            colours.append(colour)
            shapes.append(shape)
    return torch.stack(rows), torch.tensor(colours), torch.tensor(shapes)


def probe_accuracy(
    train: torch.Tensor, train_y: torch.Tensor, held: torch.Tensor, held_y: torch.Tensor, classes: int
) -> float:
    """Held-out accuracy of a one-hidden-layer MLP fitted (full batch, 400 AdamW steps) on
    standardised features."""
    torch.manual_seed(0)
    mean, scale = train.mean(0), train.std(0) + 1e-6
    train, held = (train - mean) / scale, (held - mean) / scale
    mlp = torch.nn.Sequential(
        torch.nn.Linear(train.shape[1], 128), torch.nn.ReLU(), torch.nn.Linear(128, classes)
    )
    optimizer = torch.optim.AdamW(mlp.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(400):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(mlp(train), train_y).backward()
        optimizer.step()
    with torch.no_grad():
        return float((mlp(held).argmax(1) == held_y).float().mean())


def print_probe(
    rows: list[tuple[str, QwenVLPolicy | None]], train: list[SceneItem], held: list[SceneItem]
) -> None:
    print("| cell features | object views (train / held out) | colour | shape |")
    print("|---|---|---|---|")
    for name, policy in rows:
        x, colour, shape = cell_features(policy, train)
        hx, hcolour, hshape = cell_features(policy, held)
        colour_acc = probe_accuracy(x, colour, hx, hcolour, len(COLOURS))
        shape_acc = probe_accuracy(x, shape, hx, hshape, len(SHAPES))
        print(f"| {name} | {len(x)} / {len(hx)} | {colour_acc:.2f} | {shape_acc:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--split", required=True, help="a synthetic-world split folder (runs/world/valid)")
    parser.add_argument("--policy", action="append", required=True, help="NAME=SPEC (a policy spec)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--probe-train", help="a train split: also probe each policy's keyframe cells")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    policies = [
        (entry.split("=", 1)[0], load_policy(entry.split("=", 1)[1], device="cpu")) for entry in args.policy
    ]
    items = scene_items(args.split)
    twins = [has_twin(i.label, list(i.boxes)) for i in items]
    print(f"{len(items)} objects, {sum(twins)} with another of their shape in view")
    print("| policy | items | " + " | ".join(LANDINGS) + " |")
    print("|---|---|" + "---|" * len(LANDINGS))
    for name, policy in policies:
        landed = [landing(answer_box(policy, i.frame, i.label), i.label, i.boxes) for i in items]
        for subset, keep in (("all", [True] * len(items)), ("same shape in view", twins)):
            counts = collections.Counter(x for x, k in zip(landed, keep, strict=True) if k)
            cells = " | ".join(str(counts[k]) for k in LANDINGS)
            print(f"| {name} ({subset}) | {sum(keep)} | {cells} |")
    local = [(name, p) for name, p in policies if isinstance(p, QwenVLPolicy)]  # losses need weights
    print("\n| policy | colour word: gap (pairs) | shape word: gap (pairs) |")
    print("|---|---|---|")
    for name, policy in local:
        gaps = word_gaps(items, policy_box_loss(policy))
        cells = " | ".join(f"{gap:+.4f} ({n})" for gap, n in gaps.values())
        print(f"| {name} | {cells} |")
    if args.probe_train:
        train = scene_items(args.probe_train)
        print_probe([("pixels", None), *local], train[:600], items)
        print_readout(local, train[:150], items)


if __name__ == "__main__":
    main()
