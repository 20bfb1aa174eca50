"""Can a reader pick an object out of round 2's visual tokens by its COLOUR? Select by colour,
report the shape: "the shape of the red one" on a still whose other shapes differ from the
target in both colour and shape, read from the policy's frozen keyframe tokens.

Why: round 2's box does not depend on the colour word (`grounding_confusions.py`, session 25),
though each object's token tells its colour (probe 0.91). This separates the two places the
failure could be. `--reader head`: one attention head whose query is the policy's (frozen)
colour-word embedding, over the 64 tokens, reads the selected shape; it says whether the tokens
support selection by colour at all. `--reader language-model`: the policy's own language model
(its trained weights, or `--fresh` random ones, the first `--layers` decoder layers) reads the
round-2 prompt "the shape of the <colour> one" with the tokens in place and the colour word
appended as the answer's first word; its next-word logits over the three shape words are the
answer. Only the reader trains (AdamW, no weight decay, 16 stills a step); chance is 1/3, and a
reader that knows which shapes are in view but not which one is the named colour's scores about
1/2.

Measured (session 26; session 23's SFT policy's tokens, 3,000 train / 300 held-out stills;
held-out accuracy at steps 1,000 / 2,000, one run each): one head (lr 1e-3) 0.65 / 0.71; the
language model with fresh weights, 1 layer (lr 1e-3) 0.43 / 0.63, all 4 layers at lr 1e-3
0.33 / 0.32, at lr 3e-4 0.40 / 0.63 (0.76 at 4,000), at lr 1e-4 0.39 / 0.42; its trained
weights (lr 3e-4) 0.46 / 0.54. So the tokens support selection by colour and the architecture
can learn it from a fresh start at a modest learning rate; the trained language model hardly
moves off reading which shapes are in view (docs/synthetic-world.md, session 26).

Usage: python benchmarks/colour_binding.py --policy SPEC [--reader head|language-model]
           [--fresh] [--layers N] [--lr 3e-4] [--steps 2000] [--stills 3000]
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from revseg_agent.graphs.chats import KEYFRAME_REF, round2_messages
from revseg_agent.graphs.registry import load_policy
from revseg_agent.policies.base import ImageFrame
from revseg_agent.policies.qwen import QwenVLPolicy
from revseg_agent.synth.policy import keyframe_tokens
from revseg_agent.synth.scenes import COLOURS, SHAPES, name_classes, render_still

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BindingStill:
    """A still whose target is the only object of its colour and the only one of its shape."""

    frame: np.ndarray
    colour: int  # index into COLOURS
    shape: int  # index into SHAPES
    others: tuple[str, ...]


def binding_still(seed: int) -> BindingStill:
    """The target and 1-2 distractors, redrawn until every distractor differs from the target in
    colour AND shape: the named colour alone picks the target, and its shape is the answer."""
    rng = np.random.default_rng(seed)
    while True:
        still = render_still(int(rng.integers(2**31)), distractors=1 + int(rng.integers(2)))
        colour, shape = name_classes(still.name)
        others = [name_classes(o) for o in still.others]
        if others and all(c != colour and s != shape for c, s in others):
            return BindingStill(still.frame, colour, shape, tuple(still.others))


def word_id(policy: QwenVLPolicy, word: str) -> int:
    """The one token of " word" (colour and shape words are single tokens in the world's BPE)."""
    ids = policy.processor.tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"{word!r} is not one token for this policy: {ids}")
    return int(ids[0])


def visual_tokens(policy: QwenVLPolicy, stills: Sequence[BindingStill]) -> torch.Tensor:
    """Round 2's keyframe tokens of each still `(N, cells, width)` (frozen tower and merger)."""
    with torch.no_grad():
        return torch.stack(
            [keyframe_tokens(policy, s.frame).flatten(0, 1).float() for s in tqdm(stills, "tokens")]
        )


class HeadReader(torch.nn.Module):
    """One attention head: query from the named colour's (frozen) word embedding, keys and values
    from the layer-normed tokens, a small MLP on the attended value names the shape."""

    def __init__(self, colour_embeddings: torch.Tensor, width: int, dim: int = 32) -> None:
        super().__init__()
        self.colours = torch.nn.Embedding.from_pretrained(colour_embeddings.detach().clone(), freeze=True)
        self.query = torch.nn.Sequential(
            torch.nn.RMSNorm(colour_embeddings.shape[1]), torch.nn.Linear(colour_embeddings.shape[1], dim)
        )
        self.norm = torch.nn.LayerNorm(width)
        self.key = torch.nn.Linear(width, dim)
        self.value = torch.nn.Linear(width, 2 * dim)
        self.out = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(2 * dim, len(SHAPES)))
        self.scale = dim**-0.5

    def forward(self, tokens: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
        x = self.norm(tokens)
        q = self.query(self.colours(colours))
        weights = torch.softmax(torch.einsum("bnd,bd->bn", self.key(x), q) * self.scale, dim=-1)
        return self.out(torch.einsum("bn,bnd->bd", weights, self.value(x)))


class LanguageModelReader(torch.nn.Module):
    """The policy's language model on round 2's prompt "the shape of the <colour> one", the
    tokens in the image's place, the colour word appended as the answer's first word: the logits
    of the three shape words at that last position (the lm_head's own rows)."""

    def __init__(self, policy: QwenVLPolicy, *, layers: int | None = None, fresh: bool = False) -> None:
        super().__init__()
        model = policy.model
        self.language_model = model.model.language_model
        if fresh:
            fresh_model = type(model)(model.config)
            self.language_model.layers.load_state_dict(fresh_model.model.language_model.layers.state_dict())
        if layers is not None:
            self.language_model.layers = torch.nn.ModuleList(list(self.language_model.layers)[:layers])
            text = model.config.text_config
            text.num_hidden_layers = layers
            if getattr(text, "layer_types", None) is not None:
                text.layer_types = text.layer_types[:layers]
        self.lm_head = model.lm_head
        self.image_token = int(model.config.image_token_id)
        self.shape_ids = torch.tensor([word_id(policy, s) for s in SHAPES])
        prompts, positions = [], []
        blank = np.zeros((112, 112, 3), np.uint8)
        for colour in COLOURS:
            inputs = policy.prepare_inputs(
                round2_messages(f"the shape of the {colour} one"), {KEYFRAME_REF: ImageFrame(blank)}
            )
            ids = torch.cat([inputs["input_ids"][0], torch.tensor([word_id(policy, colour)])])
            rope = model.model.get_rope_index(
                inputs["input_ids"],
                mm_token_type_ids=inputs["mm_token_type_ids"],
                image_grid_thw=inputs["image_grid_thw"],
                attention_mask=inputs["attention_mask"],
            )[0]
            positions.append(torch.cat([rope, rope[:, :, -1:] + 1], dim=-1)[:, 0])
            prompts.append(ids)
        if len({len(p) for p in prompts}) != 1:
            raise ValueError("the six prompts differ in length: a colour word is not one token")
        self.register_buffer("prompts", torch.stack(prompts), persistent=False)  # (6, T)
        self.register_buffer("positions", torch.stack(positions, dim=1), persistent=False)  # (3, 6, T)

    def forward(self, tokens: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
        ids = self.prompts[colours]
        embeds = self.language_model.embed_tokens(ids)
        image = (ids == self.image_token).unsqueeze(-1).expand_as(embeds)
        embeds = embeds.masked_scatter(image, tokens.to(embeds.dtype).reshape(-1, tokens.shape[-1]))
        hidden = self.language_model(
            inputs_embeds=embeds, position_ids=self.positions[:, colours]
        ).last_hidden_state
        return self.lm_head(hidden[:, -1])[:, self.shape_ids]


def train_reader(
    reader: torch.nn.Module,
    tokens: torch.Tensor,
    colours: torch.Tensor,
    shapes: torch.Tensor,
    *,
    held_out: int,
    steps: int,
    lr: float,
    batch: int = 16,
    every: int = 250,
    seed: int = 0,
) -> list[tuple[int, float]]:
    """Fit `reader` on all but the last `held_out` stills; held-out accuracy every `every` steps."""
    generator = torch.Generator().manual_seed(seed)
    train = len(tokens) - held_out
    params = [p for p in reader.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    curve = []
    for step in tqdm(range(1, steps + 1), "steps"):
        idx = torch.randint(0, train, (batch,), generator=generator)
        loss = torch.nn.functional.cross_entropy(reader(tokens[idx], colours[idx]), shapes[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % every == 0 or step == steps:
            with torch.no_grad():
                guess = reader(tokens[train:], colours[train:]).argmax(-1)
            curve.append((step, float((guess == shapes[train:]).float().mean())))
            logger.info("step %d held-out accuracy %.3f", *curve[-1])
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", required=True)
    parser.add_argument("--reader", choices=("head", "language-model"), default="head")
    parser.add_argument("--fresh", action="store_true", help="random decoder layers (language-model reader)")
    parser.add_argument("--layers", type=int, default=None, help="keep the first N decoder layers")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--stills", type=int, default=3000, help="training stills (300 more are held out)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(args.seed)
    policy = load_policy(args.policy, device="cpu")
    policy.model.eval()
    stills = [binding_still(k) for k in range(args.stills + 300)]
    tokens = visual_tokens(policy, stills)
    colours = torch.tensor([s.colour for s in stills])
    shapes = torch.tensor([s.shape for s in stills])
    if args.reader == "head":
        embeddings = policy.model.get_input_embeddings().weight
        reader: torch.nn.Module = HeadReader(
            torch.stack([embeddings[word_id(policy, c)] for c in COLOURS]), tokens.shape[-1]
        )
    else:
        policy.model.model.visual.requires_grad_(False)
        reader = LanguageModelReader(policy, layers=args.layers, fresh=args.fresh)
    curve = train_reader(
        reader, tokens, colours, shapes, held_out=300, steps=args.steps, lr=args.lr, seed=args.seed
    )
    print("| step | held-out accuracy |\n|---|---|")
    for step, accuracy in curve:
        print(f"| {step:,} | {accuracy:.3f} |")


if __name__ == "__main__":
    main()
