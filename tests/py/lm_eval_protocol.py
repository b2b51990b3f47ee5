"""lm-evaluation-harness's tokenisation of a (context, continuation) pair, the one rule the
cross-check test and the evaluation benchmark both reproduce (lm-eval 0.4.13, HFLM for causal
models: `tok_encode` keeps the tokenizer's default special tokens, e.g. its BOS, unless the
text starts with the BOS text; trailing context whitespace moves onto the continuation; an
empty context is the prefix token with the continuation encoded without special tokens)."""


def _prefix(tok):
    return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id


def _tok_encode(tok, text):
    prefix = tok.decode(_prefix(tok))
    return tok(text, add_special_tokens=not (prefix and text.startswith(prefix)))["input_ids"]


def encode_pair(tok, context, continuation):
    if not context:
        cont = tok(continuation, add_special_tokens=False)["input_ids"]
        prefix = _prefix(tok)
        return (cont[:1], cont[1:]) if cont and cont[0] == prefix else ([prefix], cont)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = _tok_encode(tok, context + continuation)
    ctx = _tok_encode(tok, context)
    return ctx, whole[len(ctx):]


class Requests:
    """lm-eval's loglikelihood requests for multiple-choice items, batched as its HF backend
    batches them: one input per distinct context + continuation[:-1] (requests that share it
    are computed once), sorted longest first, right-padded batches of at most
    `max_batch_tokens` padded tokens. `needs[item][choice]` lists the (input, position,
    target) triples whose log-probabilities that choice sums."""

    def __init__(self, tok, items):
        self.inputs, index, self.needs = [], {}, []
        for it in items:
            per_choice = []
            for c in it["choices"]:
                ctx, cont = encode_pair(tok, it["context"], c)
                inp = tuple((ctx + cont)[:-1])
                if inp not in index:
                    index[inp] = len(self.inputs)
                    self.inputs.append(inp)
                per_choice.append([(index[inp], len(ctx) - 1 + i, t) for i, t in enumerate(cont)])
            self.needs.append(per_choice)
        self.wanted = {}
        for per_choice in self.needs:
            for triples in per_choice:
                for s, p, t in triples:
                    self.wanted.setdefault(s, []).append((p, t))

    @property
    def tokens(self):
        return sum(len(x) for x in self.inputs)

    def batches(self, max_batch_tokens):
        order = sorted(range(len(self.inputs)), key=lambda i: -len(self.inputs[i]))
        out, i = [], 0
        while i < len(order):
            rows = max(1, max_batch_tokens // len(self.inputs[order[i]]))
            out.append(order[i : i + rows])
            i += rows
        return out

    def run(self, model, batch, scores):
        """Run one batch (full logits, as lm-eval computes them) and store each wanted
        (position, target) log-probability in `scores[input]`."""
        import torch

        n = max(len(self.inputs[s]) for s in batch)
        ids = torch.tensor([list(self.inputs[s]) + [self.inputs[s][0]] * (n - len(self.inputs[s])) for s in batch])
        mask = torch.tensor([[1] * len(self.inputs[s]) + [0] * (n - len(self.inputs[s])) for s in batch])
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
        for r, s in enumerate(batch):
            scores[s] = {(p, t): float(logp[r, p, t]) for p, t in self.wanted[s]}

    def accuracy(self, items, scores):
        """lm-eval's `acc`: the choice with the highest summed log-likelihood (first on ties)."""
        correct = 0
        for it, per_choice in zip(items, self.needs):
            lls = [sum(scores[s][(p, t)] for s, p, t in triples) for triples in per_choice]
            correct += max(range(len(lls)), key=lambda k: (lls[k], -k)) == it["label"]
        return correct / len(items)
