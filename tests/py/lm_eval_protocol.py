"""lm-evaluation-harness's tokenisation of a (context, continuation) pair, the one rule the
cross-check test and the evaluation benchmark both reproduce (HFLM._encode_pair for causal
models: no special tokens, trailing context whitespace moved onto the continuation)."""


def encode_pair(tok, context, continuation):
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    return ctx, whole[len(ctx):]
