"""Answer checking: batched greedy generation, answer normalisation and alias matching, and the rank
and probability a model gives a target string.

Generation runs HF `generate` with its KV cache on a *plain* HF model of the wrapped model's class
whose parameters and buffers are the bridge's own tensors (no copy, so edits show). Measured with
TransformerLens 4.3 / transformers 5.24: `generate` on `bridge.original_model` itself yields garbage
after the first token when the KV cache is on (the bridge's wrapped attention does not use it),
while the parameter-sharing plain model gives exactly the cache-free recompute loop's tokens
(a plain recompute loop; see tests/evaluation/test_answers.py) about 3x faster. Prompts are tokenised with
`bridge.to_tokens` (the bridge's BOS convention) and left-padded.
"""

from __future__ import annotations

import re
import unicodedata
import weakref
from collections.abc import Iterable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge
from transformers import DynamicCache

from ace_interp.editing.keys import cache_keyword
from ace_interp.model.architecture import hf_model

_ARTICLES = ("the ", "a ", "an ")


# ----------------------------------------------------------------------------- normalisation


def normalize_answer(text: str) -> str:
    """Lower case, accents folded, punctuation dropped (except inside words), spaces collapsed,
    periods removed ("U.S." -> "us"), a leading article removed: "The  Eiffel-Tower." -> "eiffel-tower";
    "São Paulo" -> "sao paulo"."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = text.replace(".", "")  # "U.S." -> "us", "D.C." -> "dc"
    text = re.sub(r"[^\w\s'\-&]", " ", text)  # keep word-internal ' - &
    text = re.sub(r"(?<!\w)['\-&]|['\-&](?!\w)", " ", text)  # but not at word edges
    text = re.sub(r"\s+", " ", text).strip()
    for art in _ARTICLES:
        if text.startswith(art):
            text = text[len(art) :]
            break
    return text


def answer_text(generation: str) -> str:
    """The answer part of a continuation: its first non-empty line (generation runs past the answer)."""
    for line in generation.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def answer_matches(generation: str, answers: Iterable[str]) -> bool:
    """Does the generated answer name one of `answers` (an answer and its aliases)?

    The normalised first line must equal an accepted answer or start with it followed by a word
    boundary ("paris, the city of light" matches "Paris"; "parisian" does not), allowing a plural
    "s"/"es" ("indian rupees" matches "Indian rupee").
    """
    gen = normalize_answer(answer_text(generation))
    if not gen:
        return False
    for a in answers:
        a = normalize_answer(a)
        if not a:
            continue
        for form in (a, a + "s", a + "es"):
            if gen == form or (gen.startswith(form) and not (gen[len(form)].isalnum() or gen[len(form)] in "'-&")):
                return True
    return False


COT_ANSWER = re.compile(r"answer is[:\s]+(.+?)(?:\.(?:\s|$)|\n|$)", re.IGNORECASE)


def cot_final_answer(generation: str) -> str:
    """The answer a chain-of-thought continuation commits to ("... So the answer is Paris." -> "Paris").

    Only the first answer block counts (the model may go on with a new "Q:"); returns "" when there is
    no "answer is" statement.
    """
    block = re.split(r"\n\s*Q:", generation, maxsplit=1)[0]
    m = COT_ANSWER.search(block)
    return m.group(1).strip() if m else ""


# ----------------------------------------------------------------------------- generation


def plain_hf_model(bridge: TransformerBridge) -> torch.nn.Module:
    """A fresh HF model of the wrapped class whose parameters and buffers *are* the bridge's tensors.

    Built on the meta device and given the live tensors (`assign=True`), so it costs no memory and
    sees every in-place weight edit; use it for the duration of one call (a parameter replaced by
    a new tensor later would not be seen)."""
    from transformers import GenerationConfig

    from ace_interp.model.architecture import hf_parameters

    model = hf_model(bridge)
    with torch.device("meta"):
        plain = type(model)(model.config)
    plain.load_state_dict({k: v.detach() for k, v in hf_parameters(bridge).items()}, assign=True, strict=True)
    live_buffers = {n.replace("._original_component", ""): b for n, b in model.named_buffers()}
    for name, buf in list(plain.named_buffers()):
        if buf.is_meta:  # non-persistent buffers (rotary frequencies) are not in the state dict
            owner, _, leaf = name.rpartition(".")
            if name not in live_buffers:
                raise RuntimeError(f"cannot find the bridge's buffer {name} to build a plain HF model")
            plain.get_submodule(owner)._buffers[leaf] = live_buffers[name]
    plain.tie_weights()
    plain.generation_config = GenerationConfig.from_model_config(model.config)
    return plain.eval()


# bridge -> (its plain HF model, the identity of every tensor that model was built on). Building one costs two
# model constructions on the meta device (~40% of an evaluation row's time on a toy model, cProfile: 30 calls
# took 40 s of 77 s of generation), so generation reuses it while the bridge's tensors are the same objects.
_PLAIN_MODELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tensor_identity(bridge: TransformerBridge) -> tuple:
    """(name, storage pointer, shape, dtype, device) of every parameter and buffer of the wrapped HF model."""
    return tuple((name, t.data_ptr(), tuple(t.shape), t.dtype, t.device)
                 for name, t in hf_model(bridge).state_dict(keep_vars=True).items())


def shared_plain_hf_model(bridge: TransformerBridge) -> torch.nn.Module:
    """`plain_hf_model(bridge)`, built once per bridge and reused while every tensor of the bridge is the one it was
    built on. In-place weight edits (`model.weights.apply_weight_updates` and its undo) are seen through the shared
    storage; a tensor *replaced* by another (a new Parameter, `load_state_dict` without assign, a device move)
    changes the identity and the plain model is rebuilt."""
    identity = _tensor_identity(bridge)
    cached = _PLAIN_MODELS.get(bridge)
    if cached is not None and cached[1] == identity:
        return cached[0]
    plain = plain_hf_model(bridge)
    _PLAIN_MODELS[bridge] = (plain, identity)
    return plain


def _left_padded(bridge: TransformerBridge, prompts: Sequence[str]) -> tuple[Int[Tensor, "b s"], Int[Tensor, "b s"]]:
    rows = [bridge.to_tokens(p)[0] for p in prompts]
    width = max(len(r) for r in rows)
    pad = bridge.tokenizer.pad_token_id
    pad = pad if pad is not None else (bridge.tokenizer.eos_token_id or 0)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = r
        mask[i, width - len(r) :] = 1
    return ids, mask


def _stop_ids(bridge: TransformerBridge, stop_at_newline: bool) -> list[int]:
    """Token ids that end an answer: EOS, and (optionally) any token that is a pure newline."""
    tok = bridge.tokenizer
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    if stop_at_newline:
        for piece in ("\n", "\n\n", ".\n"):
            enc = tok.encode(piece, add_special_tokens=False)
            if len(enc) == 1:
                ids.add(enc[0])
    return sorted(i for i in ids if i is not None)


@torch.no_grad()
def generate_greedy(
    bridge: TransformerBridge,
    prompts: Sequence[str],
    max_new_tokens: int = 8,
    batch_size: int = 32,
    stop_at_newline: bool = True,
    progress: bool = False,
) -> list[str]:
    """Greedy continuations of `prompts` (decoded, without the prompt), batched with left padding.

    `stop_at_newline` ends a row at its first newline token (few-shot answers are one line); rows
    are sorted by length so batches carry little padding. Results are in the order of `prompts`.
    """
    if isinstance(prompts, str):
        raise TypeError("pass a list of prompts")
    if not prompts:
        return []
    model = shared_plain_hf_model(bridge)
    device = next(model.parameters()).device
    tok = bridge.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    stops = _stop_ids(bridge, stop_at_newline)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="generate", leave=False)
    for idx in batches:
        ids, mask = _left_padded(bridge, [prompts[i] for i in idx])
        gen = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=pad,
            eos_token_id=stops or None,
            temperature=None,
            top_p=None,
            top_k=None,
            return_dict_in_generate=False,
        )
        new = gen[:, ids.shape[1] :]
        for row, i in zip(new, idx, strict=True):
            # decode up to the first stop token only (HF pads finished rows after it)
            cut = next((j for j, t in enumerate(row.tolist()) if t in stops), len(row))
            keep = row[:cut].tolist()
            out[i] = tok.decode(keep, skip_special_tokens=True)
    return out


@torch.no_grad()
def generate_greedy_each(
    bridge: TransformerBridge,
    prompts: Sequence[str],
    max_new_tokens: Sequence[int],
    stop_at_newline: Sequence[bool],
) -> list[str]:
    """Greedy continuations of `prompts`, each with its own token budget and stop rule, decoded in one batch.

        >>> generate_greedy_each(bridge, ["Q: ... A:", "The capital of France is"], [64, 8], [True, True])  # doctest: +SKIP

    Each prompt is prefilled alone (its own length: no padding computed, only the last position's logits), then
    the rows' KV caches are left-padded into one [batch, heads, width, d_head] cache per layer and decoded
    together, one token of every unfinished row per forward: a decoding step reads the weights once for all
    rows (what a step costs on a CPU) instead of once per prompt and setting, and a finished row leaves the batch
    (direct answers end after a few tokens, chains of thought run on). A row ends at its first stop token
    (EOS; with `stop_at_newline` a newline token too) or after its budget; the text is decoded up to the stop, as
    `generate_greedy` decodes it (tests/evaluation/test_answers.py checks them equal).
    """
    if not (len(prompts) == len(max_new_tokens) == len(stop_at_newline)):
        raise ValueError(f"{len(prompts)} prompts, {len(max_new_tokens)} budgets, {len(stop_at_newline)} stop rules")
    if not prompts:
        return []
    model = shared_plain_hf_model(bridge)
    device = next(model.parameters()).device
    keyword = cache_keyword(model)
    stops = {flag: set(_stop_ids(bridge, flag)) for flag in (True, False)}
    rows = [bridge.to_tokens(p)[0].to(device) for p in prompts]
    lengths = [len(r) for r in rows]
    width, n = max(lengths), len(rows)
    caches, tokens = [], []
    for row in rows:
        cache = DynamicCache(config=model.config)
        logits = model(input_ids=row[None], use_cache=True, logits_to_keep=1, **{keyword: cache}).logits
        caches.append(cache)
        tokens.append([int(logits[0, -1].argmax())])
    done = [t[0] in stops[bool(nl)] or budget <= 1 for t, nl, budget in zip(tokens, stop_at_newline, max_new_tokens)]
    if not all(done):
        batched = DynamicCache(config=model.config)
        for layer in range(len(caches[0].layers)):
            batched.update(*(_left_pad([getattr(c.layers[layer], name)[0] for c in caches], width)
                             for name in ("keys", "values")), layer)
        mask = torch.zeros(n, width, dtype=torch.long, device=device)
        for i, length in enumerate(lengths):
            mask[i, width - length :] = 1
        position = torch.tensor(lengths, device=device)
        live = list(range(n))  # the rows still decoding, in cache order
        while live:
            if any(done[i] for i in live):  # a finished row leaves the batch: a step costs only the live rows
                keep = [j for j, i in enumerate(live) if not done[i]]
                if not keep:
                    break
                index = torch.tensor(keep, dtype=torch.long, device=device)
                batched.batch_select_indices(index)
                mask, position, live = mask[index], position[index], [live[j] for j in keep]
            last = torch.tensor([tokens[i][-1] for i in live], device=device)[:, None]
            mask = torch.cat([mask, mask.new_ones(len(live), 1)], 1)
            logits = model(input_ids=last, attention_mask=mask, position_ids=position[:, None], use_cache=True,
                           logits_to_keep=1, **{keyword: batched}).logits
            position = position + 1
            for i, nxt in zip(live, logits[:, -1].argmax(-1).tolist(), strict=True):
                tokens[i].append(nxt)
                done[i] = nxt in stops[bool(stop_at_newline[i])] or len(tokens[i]) >= max_new_tokens[i]
    out = []
    for t, nl in zip(tokens, stop_at_newline):
        cut = next((j for j, x in enumerate(t) if x in stops[bool(nl)]), len(t))
        out.append(bridge.tokenizer.decode(t[:cut], skip_special_tokens=True))
    return out


def _left_pad(rows: Sequence[Float[Tensor, "heads seq d_head"]], width: int) -> Float[Tensor, "batch heads width d_head"]:
    """One prompt's cached keys (or values) per row, stacked with zeros before the shorter ones."""
    out = rows[0].new_zeros(len(rows), rows[0].shape[0], width, rows[0].shape[2])
    for i, row in enumerate(rows):
        out[i, :, width - row.shape[1] :] = row
    return out


def next_token_answers(bridge: TransformerBridge, prompts: Sequence[str]) -> list[str]:
    """Each prompt's greedy next token, decoded and stripped (a special token gives ""): a one-token cloze's answer."""
    return [text.strip() for text in generate_greedy(bridge, prompts, max_new_tokens=1, stop_at_newline=False)]


def check_answers(
    bridge: TransformerBridge,
    prompts: Sequence[str],
    answers: Sequence[Sequence[str]],
    max_new_tokens: int = 8,
    batch_size: int = 32,
    chain_of_thought: bool = False,
) -> tuple[list[bool], list[str]]:
    """Generate for each prompt and check it against its accepted answers; returns (correct, generations).

    With `chain_of_thought` the answer is the one after "the answer is" (see `cot_final_answer`).
    """
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answer lists")
    gens = generate_greedy(bridge, prompts, max_new_tokens, batch_size, stop_at_newline=not chain_of_thought)
    texts = [cot_final_answer(g) for g in gens] if chain_of_thought else gens
    return [answer_matches(t, a) for t, a in zip(texts, answers, strict=True)], gens


# ----------------------------------------------------------------------------- target rank / probability


def target_token_ids(bridge: TransformerBridge, target: str, leading_space: bool = True) -> list[int]:
    """Token ids of a target continuation (no BOS), with a leading space by default (" Paris").

    A target that tokenises to nothing (empty or whitespace) raises ValueError.
    """
    if not isinstance(target, str) or not target.strip():
        raise ValueError(f"target {target!r} is empty: it has no tokens to score")
    text = (" " + target.lstrip()) if leading_space else target
    ids = bridge.tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise ValueError(f"target {target!r} tokenises to no tokens")
    return list(ids)


@torch.no_grad()
def target_scores(
    bridge: TransformerBridge,
    prompts: Sequence[str],
    targets: Sequence[str],
    batch_size: int = 32,
    leading_space: bool = True,
) -> dict[str, Tensor]:
    """How strongly the model predicts each target after its prompt (teacher-forced, one forward each).

    Returns tensors of shape [n]:
      `first_token_rank`  rank of the target's first token in the next-token distribution (0 = top);
      `first_token_prob`  its probability;
      `log_prob`          log p(target | prompt) summed over the target's tokens;
      `greedy_match`      whether greedy decoding would produce exactly the target's tokens.
    """
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    model = hf_model(bridge)
    device = next(model.parameters()).device
    tok_targets = [target_token_ids(bridge, t, leading_space) for t in targets]
    rank = torch.empty(len(prompts), dtype=torch.long)
    prob = torch.empty(len(prompts))
    logp = torch.empty(len(prompts))
    greedy = torch.empty(len(prompts), dtype=torch.bool)
    pad = bridge.tokenizer.pad_token_id or 0
    for start in range(0, len(prompts), batch_size):
        rows, spans = [], []
        for p, t in zip(prompts[start : start + batch_size], tok_targets[start : start + batch_size], strict=True):
            ptoks = bridge.to_tokens(p)[0].tolist()
            rows.append(ptoks + t)
            spans.append((len(ptoks), len(t)))
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):  # right padding: positions match a lone run
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        lp: Float[Tensor, "b s v"] = logits.log_softmax(-1).cpu()
        for i, (n_prompt, n_t) in enumerate(spans):
            j = start + i
            pos = torch.arange(n_prompt - 1, n_prompt - 1 + n_t)
            tgt = torch.tensor(tok_targets[j])
            step = lp[i, pos]  # [n_t, vocab]: distribution before each target token
            first = step[0]
            rank[j] = int((first > first[tgt[0]]).sum())
            prob[j] = first[tgt[0]].exp()
            logp[j] = step.gather(-1, tgt[:, None]).sum()
            greedy[j] = bool((step.argmax(-1) == tgt).all())
    return {"first_token_rank": rank, "first_token_prob": prob, "log_prob": logp, "greedy_match": greedy}
