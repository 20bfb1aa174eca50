"""The synthetic reasoning-VOS world: deterministic, exact, in MeViS's layout, and its queries
mean what they say (checked against the written masks, not the generator's own bookkeeping)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from revseg_agent.app.cli import main
from revseg_agent.eval.datasets import open_benchmark
from revseg_agent.masks_io import decode_rle
from revseg_agent.synth import SPLITS, WorldSpec, write_world
from revseg_agent.synth.queries import NAME_PATTERN, NAMES, PHRASINGS, held_out_phrasing, listing
from revseg_agent.synth.scenes import (
    COLOURS,
    SHAPES,
    lit_colour,
    name_classes,
    name_parts,
    object_name,
    render_still,
)

SPEC = WorldSpec(seed=3, train=8, valid=2, test=6)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "world"
    write_world(out, SPEC)
    return out


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _meta(world: Path, split: str) -> dict[str, dict[str, object]]:
    meta: dict[str, dict[str, object]] = json.loads((world / split / "meta_expressions.json").read_text())[
        "videos"
    ]
    return meta


def _masks(world: Path, split: str) -> dict[str, np.ndarray]:
    raw = json.loads((world / split / "mask_dict.json").read_text())
    return {anno: np.stack([decode_rle(r) for r in rles]) for anno, rles in raw.items()}


def test_the_same_seed_writes_the_same_bytes(world: Path, tmp_path: Path) -> None:
    write_world(tmp_path / "again", SPEC)
    assert _digest(tmp_path / "again") == _digest(world)
    write_world(tmp_path / "other", WorldSpec(seed=4, train=8, valid=2, test=6))
    other = _digest(tmp_path / "other")
    assert other["train/mask_dict.json"] != _digest(world)["train/mask_dict.json"]


def test_splits_share_no_video(world: Path) -> None:
    frames = {
        split: {
            hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (world / split / "JPEGImages").rglob("00000.png")
        }
        for split in SPLITS
    }
    assert len(frames["train"]) == SPEC.train and len(frames["test"]) == SPEC.test
    assert not frames["train"] & frames["valid"] and not frames["train"] & frames["test"]
    assert not frames["valid"] & frames["test"]


def test_masks_are_exactly_the_pixels_of_their_objects(world: Path) -> None:
    """On every rendered frame, the pixels of an object colour (under the scene's light) are
    exactly the masks of the objects of that colour (the floor never reaches those values), and
    masks never overlap."""
    meta, masks = _meta(world, "train"), _masks(world, "train")
    for video, entry in meta.items():
        objects = entry["objects"]
        annos = sorted({a for e in entry["expressions"].values() for a in e["anno_id"]})  # type: ignore[attr-defined]
        by_obj = {}
        for e in entry["expressions"].values():  # type: ignore[attr-defined]
            for obj, anno in zip(e["obj_id"], e["anno_id"], strict=True):
                by_obj[str(obj)] = masks[anno]
        assert annos
        for t, name in enumerate(entry["frames"]):  # type: ignore[arg-type]
            frame = np.array(
                Image.open(world / "train" / "JPEGImages" / video / f"{name}.png").convert("RGB")
            )
            stacked = np.stack([m[t] for m in by_obj.values()]) if by_obj else np.zeros((0, *frame.shape[:2]))
            assert stacked.sum(axis=0).max(initial=0) <= 1  # no pixel belongs to two objects
            for obj, stack in by_obj.items():
                colour = lit_colour(name_parts(objects[obj]["name"])[0], frame.shape[:2])  # type: ignore[index]
                painted = np.all(frame == colour, axis=-1)
                same = [
                    o
                    for o in objects
                    if name_parts(objects[o]["name"])[0] == name_parts(objects[obj]["name"])[0]  # type: ignore[index]
                ]
                if len(same) == 1:
                    assert np.array_equal(painted, stack[t]), (video, obj, t)
                else:
                    assert not (stack[t] & ~painted).any()


def _first_seen(stack: np.ndarray) -> int:
    return int(np.flatnonzero(stack.reshape(len(stack), -1).any(axis=1))[0])


def test_queries_mean_what_they_say(world: Path) -> None:
    """Targets checked from the masks alone, for the intents the masks can decide."""
    checked = 0
    for split in SPLITS:
        meta, masks = _meta(world, split), _masks(world, split)
        for entry in meta.values():
            every = {a for e in entry["expressions"].values() for a in e["anno_id"]}  # type: ignore[attr-defined]
            for e in entry["expressions"].values():  # type: ignore[attr-defined]
                intent, targets = e["intent"], e["anno_id"]
                if intent == "absent":
                    assert targets == [] and e["description"] not in {
                        o["name"] for o in entry["objects"].values()
                    }  # type: ignore[attr-defined]
                elif intent == "leaves":
                    (t,) = targets
                    assert masks[t][0].any() and not masks[t][-1].any()
                elif intent == "enters_last":
                    (t,) = targets
                    assert not masks[t][0].any()
                    others = [_first_seen(masks[a]) for a in every - {t} if masks[a].any()]
                    assert all(_first_seen(masks[t]) >= o + 2 for o in others)
                elif intent in {"keeps_moving", "same_colour"}:
                    assert len(targets) >= 2
                else:
                    assert len(targets) == 1
                checked += 1
    assert checked > 30


def test_held_out_phrasings_only_in_test(world: Path) -> None:
    every = [
        e["exp"] for split in SPLITS for v in _meta(world, split).values() for e in v["expressions"].values()
    ]  # type: ignore[attr-defined]
    assert not [text for text in every if "the the" in text]
    for split in ("train", "valid"):
        for entry in _meta(world, split).values():
            for e in entry["expressions"].values():  # type: ignore[attr-defined]
                assert not held_out_phrasing(e["intent"], e["exp"]), e["exp"]
    test = [e for entry in _meta(world, "test").values() for e in entry["expressions"].values()]  # type: ignore[attr-defined]
    assert any(held_out_phrasing(e["intent"], e["exp"]) for e in test)


@pytest.mark.parametrize("intent", sorted(PHRASINGS))
def test_only_an_intent_s_last_phrasing_reads_as_held_out(intent: str) -> None:
    fields = {"name": "the red circle", "colour": "red", "shape": "circle", "hitter": "the blue square"}
    fields["hit"] = fields["hitter"]
    worded = [template.format(**fields) for template in PHRASINGS[intent]]
    assert [held_out_phrasing(intent, text) for text in worded] == [False] * (len(worded) - 1) + [True]
    assert not held_out_phrasing("no such intent", worded[-1])


def test_mevis_readers_take_it_unchanged(world: Path, tmp_path: Path) -> None:
    from revseg_agent.training.data import load_samples
    from revseg_agent.training.recipe import BenchmarkData

    bench = open_benchmark("mevis", world / "test")
    samples = bench.samples()
    assert samples and all(s.extra.get("description") for s in samples)
    training = load_samples(BenchmarkData(dataset="mevis", root=str(world / "train")), tmp_path)
    assert training and all(t.description and t.evidence for t in training)
    assert all(t.gt_masks is None for t in training)  # references: read when rewarded
    truths = [t.truth() for t in training]
    multi = [(masks, objects) for masks, objects in truths if len(objects) > 1]
    for masks, objects in multi:  # per-object stacks for multi-target rewards, their union the truth
        assert np.array_equal(np.any(np.stack(objects), axis=0), masks)
    out = tmp_path / "oracle"
    args = [
        "eval",
        "--dataset",
        "mevis",
        "--root",
        str(world / "test"),
        "--out",
        str(out),
        "--baseline",
        "oracle",
    ]
    assert main([*args, "--limit", "4", "--tracker", "classical"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["J&F"] > 50


@pytest.mark.parametrize(
    ("objects", "expected"),
    [
        (
            {"1": {"name": "the red circle", "size": "large", "role": "static"}},
            "The video shows the red circle (large, stays still).",
        ),
        (
            {
                "2": {"name": "the blue square", "size": "small", "role": "hit"},
                "1": {"name": "the red circle", "size": "large", "role": "hitter"},
            },
            "The video shows the red circle (large, rolls into another) and the blue square (small, is hit).",
        ),
        (
            {
                "1": {"name": "the red circle", "size": "small", "role": "mover"},
                "2": {"name": "the blue square", "size": "large", "role": "enterer"},
                "3": {"name": "the white triangle", "size": "small", "role": "leaver"},
            },
            "The video shows the red circle (small, moves), the blue square (large, enters) and the "
            "white triangle (small, leaves).",
        ),
    ],
    ids=["one", "two-in-id-order", "three"],
)
def test_an_inventory_lists_objects_in_id_order_with_size_and_motion(
    objects: dict[str, dict[str, str]], expected: str
) -> None:
    from revseg_agent.synth.queries import inventory

    assert inventory(objects) == expected


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["the red circle"], "the red circle"),
        (["the blue square", "the red circle"], "the red circle and the blue square"),
        (
            ["the white triangle", "the red square", "the red circle"],
            "the red circle, the red square and the white triangle",
        ),
        (["the green circle", "the green circle"], "the green circle"),
    ],
)
def test_a_listing_writes_a_set_of_names_one_way(names: list[str], expected: str) -> None:
    assert listing(names) == expected
    assert listing(reversed(names)) == expected
    assert NAME_PATTERN.findall(expected) == sorted(set(names), key=NAMES.index)


def test_training_samples_carry_their_video_s_inventory(world: Path, tmp_path: Path) -> None:
    """Every object of the sample's video is in its inventory with what it does, the query's
    targets among them; SFT's round-1 target lists it before the evidence only when asked."""
    from revseg_agent.synth.queries import ROLE_WORDS
    from revseg_agent.training.data import load_samples
    from revseg_agent.training.recipe import BenchmarkData
    from revseg_agent.training.sft import chain_example

    meta = _meta(world, "train")
    training = load_samples(BenchmarkData(dataset="mevis", root=str(world / "train")), tmp_path)
    for sample in training:
        objects = meta[sample.sample_id.rsplit("__", 1)[0]]["objects"]
        assert sample.inventory is not None and sample.description is not None
        for o in objects.values():  # type: ignore[union-attr]
            assert f"{o['name']} ({o['size']}, {ROLE_WORDS[o['role']]})" in sample.inventory
        for name in sample.description.split(" and "):
            assert name in sample.inventory
    plain = chain_example(training[0], 4).answer1
    listed = chain_example(training[0], 4, inventory=True).answer1
    assert training[0].inventory not in plain
    assert listed.index(training[0].inventory) < listed.index(str(training[0].evidence))


def test_sft_round_2_asks_what_the_graph_asks_after_the_ideal_round_1(world: Path, tmp_path: Path) -> None:
    """The chain's supervised round 2 is the graph's round 2 after the ideal round-1 answer: it
    asks for round 1's description ("the blue square"), not the reasoning query, so what SFT
    teaches is what inference asks."""
    from revseg_agent.graphs.context import Context
    from revseg_agent.graphs.pipeline import segment
    from revseg_agent.testing import BoxTracker, ScriptedPolicy
    from revseg_agent.training.data import load_samples
    from revseg_agent.training.recipe import BenchmarkData
    from revseg_agent.training.sft import chain_example

    training = load_samples(BenchmarkData(dataset="mevis", root=str(world / "train")), tmp_path)
    reasoning = [s for s in training if s.description and s.description not in s.query]
    assert reasoning, "the world has reasoning queries whose words do not name their object"
    for sample in reasoning[:3]:
        example = chain_example(sample, 4)
        policy = ScriptedPolicy(replies=[example.answer1, '[{"bbox_2d": [1, 1, 9, 9], "label": "x"}]'])
        segment(sample.video_path, sample.query, Context(policy=policy, tracker=BoxTracker(), num_frames=4))
        asked = policy.calls[1].messages
        assert asked == example.round2[0]
        assert str(sample.description) in str(asked[-1].content[-1])


def test_cli_writes_once_and_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["synth", "--out", str(tmp_path / "w"), "--train", "2", "--valid", "1", "--test", "1"]
    assert main(args) == 0
    assert "train: 2 videos" in capsys.readouterr().out
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--seed", "1"]) == 0


@pytest.mark.parametrize("colour", ["red", "green", "blue", "yellow", "purple", "white"])
def test_the_light_puts_position_into_an_objects_own_pixels(colour: str) -> None:
    """Qwen2.5-VL has no absolute position embedding: an object's position must be readable
    from its own pixels. Every colour looks different left vs right and top vs bottom."""
    lit = lit_colour(colour).astype(int)
    h, w = lit.shape[:2]
    assert np.abs(lit[h // 2, 4] - lit[h // 2, w - 5]).sum() >= 20  # left vs right
    assert np.abs(lit[4, w // 2] - lit[h - 5, w // 2]).sum() >= 20  # top vs bottom


@pytest.mark.parametrize("seed", range(6))
def test_a_still_is_one_lit_shape_whose_mask_is_exactly_its_pixels(seed: int) -> None:
    still = render_still(seed)
    colour, _ = name_parts(still.name)
    assert still.mask.any()
    assert np.array_equal(np.all(still.frame == lit_colour(colour), axis=-1) & still.mask, still.mask)
    again = render_still(seed)
    assert np.array_equal(again.frame, still.frame) and again.name == still.name


@pytest.mark.parametrize("lookalikes", [False, True])
def test_still_distractors_differ_and_lookalikes_share_the_shape_or_the_colour(lookalikes: bool) -> None:
    """Lookalike stills (SFT's `grounding_lookalikes`) are answered only by the whole name: every
    distractor shares the target's shape or its colour, never both; both kinds occur."""
    shared = {"shape": 0, "colour": 0, "neither": 0}
    for seed in range(40):
        still = render_still(seed, distractors=3, lookalikes=lookalikes)
        assert len(still.others) >= 1
        colour, shape = name_parts(still.name)
        for other in still.others:
            other_colour, other_shape = name_parts(other)
            assert other != still.name
            kind = "shape" if other_shape == shape else "colour" if other_colour == colour else "neither"
            shared[kind] += 1
    if lookalikes:
        assert shared["neither"] == 0 and shared["shape"] > 10 and shared["colour"] > 10
    else:
        assert shared["neither"] > shared["shape"] + shared["colour"]


def test_a_lookalike_still_keeps_its_target_mask_exact() -> None:
    for seed in range(6):
        still = render_still(seed, distractors=2, lookalikes=True)
        colour, _ = name_parts(still.name)
        assert np.array_equal(np.all(still.frame == lit_colour(colour), axis=-1) & still.mask, still.mask)


@pytest.mark.parametrize(
    ("name", "parts"),
    [("the red circle", ("red", "circle")), ("the purple triangle", ("purple", "triangle"))],
)
def test_a_world_name_splits_into_its_colour_and_shape(name: str, parts: tuple[str, str]) -> None:
    assert name_parts(name) == parts
    assert object_name(*parts) == name


@pytest.mark.parametrize(
    "name", ["the red", "the big red circle", "a red circle", "the red hexagon", "the teal square"]
)
def test_what_is_not_a_world_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a world object's name"):
        name_parts(name)


@pytest.mark.parametrize(
    ("name", "classes"),
    [("the red circle", (0, 0)), ("the blue triangle", (2, 2)), ("the white square", (5, 1))],
)
def test_name_classes_index_the_world_s_colours_and_shapes(name: str, classes: tuple[int, int]) -> None:
    """`name_classes`: a name's colour and shape as indices into `COLOURS` and `SHAPES`."""
    assert name_classes(name) == classes
    assert (list(COLOURS)[classes[0]], SHAPES[classes[1]]) == name_parts(name)
