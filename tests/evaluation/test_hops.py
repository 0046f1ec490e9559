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


def test_first_case_sport_edit_gets_the_equipment_hop():
    world = load_world(ASSETS / "world" / "world.json")
    case = load_mquake(ASSETS / "world" / "mquake_cases.json")[0]
    prompts = world_hop_prompts(world)(case)
    sport = [h for h in prompts if h.request == 0]
    # the case asks for the sport's origin; the other continuation of a sport is its equipment
    assert [h.prompt for h in sport] == ["{} 's sport 's equipment is"]
    assert sport[0].answer == world.facts[("volleyball", "P2283")]
