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
