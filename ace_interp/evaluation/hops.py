"""Multi-hop prompts for ACE's query write that the evaluation does not ask.

ACE's attribution variant optimises its query-group target on an edit's multi-hop prompts
(`editing.ace.HopPrompt`). Handing it the case's own multi-hop questions would train on the test
questions. In a synthetic world every bridge entity has several continuations: a person's sport has an
origin *and* equipment, and a birthplace has a nation, a continent, a language and a currency. So for an
edit (s, r, o*), the hop prompts are the world's 2-hop compositions (r, r₂) whose second relation is not
the one the case continues with. Each is posed in the cloze frame "s 's r 's r₂ is" and answered by
the world's fact (o*, r₂). The query write must then make the subject's representation carry o* so
that o*'s other facts follow. The evaluated question checks whether that transfers to the held-out
continuation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from transformer_lens.model_bridge import TransformerBridge

from ace_interp.data.mquake import MQuAKECase
from ace_interp.data.world import World, load_world, multi_hop_prompt, world_paths
from ace_interp.editing.ace import HopPrompt
from ace_interp.editing.covariance import world_corpus_path

WORLD_SPEC_FILE = "world.json"


def world_hop_prompts(world: World) -> Callable[[MQuAKECase], list[HopPrompt]]:
    """case ↦ HopPrompts for each requested rewrite, over the continuations the case does not evaluate."""
    two_hop_paths, _ = world_paths(world.config)

    def hops(case: MQuAKECase) -> list[HopPrompt]:
        relation_ids = case.relation_ids
        out = []
        for i, (rw, hop) in enumerate(zip(case.requested_rewrite, case.edited_hops, strict=True)):
            # the relation the case continues with after the hop this rewrite edits
            evaluated = relation_ids[hop + 1] if hop is not None and hop + 1 < len(relation_ids) else None
            for first, second in two_hop_paths:
                if first != rw.relation_id or second == evaluated:
                    continue
                answer = world.facts.get((rw.target_new.text, second))
                if answer is not None:
                    prompt = multi_hop_prompt(world, "{}", (first, second), frame=0, variants=(0, 0))
                    out.append(HopPrompt(i, prompt, answer))
        return out

    return hops


def model_world(bridge: TransformerBridge) -> World | None:
    """The synthetic world a toy model was trained on (next to its corpus sample), or None."""
    corpus = world_corpus_path(bridge)
    spec = Path(corpus).parent / WORLD_SPEC_FILE if corpus is not None else None
    return load_world(spec) if spec is not None and spec.exists() else None
