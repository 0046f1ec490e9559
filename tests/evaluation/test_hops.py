"""ACE's hop prompts from the synthetic world avoid the continuation the case evaluates."""

from ace_interp.data.mquake import load_mquake
from ace_interp.data.world import load_world
from ace_interp.evaluation.hops import world_hop_prompts
from ace_interp.model.loading import ASSETS


def test_hop_prompts_use_other_continuations_of_the_new_bridge_entity():
    world = load_world(ASSETS / "world" / "world.json")
    cases = load_mquake(ASSETS / "world" / "mquake_cases.json")[:40]
    hops = world_hop_prompts(world)
    n = 0
    for case in cases:
        questions = set(case.questions)
        for h in hops(case):
            rw = case.requested_rewrite[h.request]
            text = h.prompt.format(rw.subject)
            assert text not in questions  # never an evaluated question
            assert text.startswith(rw.prompt.format(rw.subject).rsplit(" is", 1)[0].rsplit(" 's", 1)[0])
            # the answer is the world's fact about the *new* object
            second = next(r for r in world.relations.values() if text.endswith(r.noun_phrases[0].format("").strip() + " is"))
            assert world.facts[(rw.target_new.text, second.rid)] == h.answer
            n += 1
    assert n > 40  # most edits have at least one other continuation


def test_a_sport_edit_gets_the_other_continuations_of_the_new_sport():
    world = load_world(ASSETS / "world" / "world.json")
    cases = load_mquake(ASSETS / "world" / "mquake_cases.json")
    # the first case that edits a person's sport and asks for the sport's origin
    case = next(c for c in cases if c.requested_rewrite[0].prompt == "{} 's sport is" and "origin" in c.questions[0])
    new_sport = case.requested_rewrite[0].target_new.text
    sport = [h for h in world_hop_prompts(world)(case) if h.request == 0]
    # a sport's continuations are equipment, continent, language and currency besides the evaluated origin
    assert sorted(h.prompt for h in sport) == sorted(
        f"{{}} 's sport 's {noun} is" for noun in ("equipment", "continent", "language", "currency"))
    for h in sport:
        rid = next(r.rid for r in world.relations.values() if h.prompt.endswith(f"'s {r.noun_phrases[0].format('').split()[-1]} is")
                   and r.takes("sport"))
        assert h.answer == world.facts[(new_sport, rid)]
