// llama.cpp's view of a GGUF hf-tailor wrote, through node-llama-cpp's prebuilt CPU build of
// llama.cpp (tests/py/gguf_check.py drives this for the test `gguf::*`).
//
// Usage: node llama_cpp_gguf.mjs NODE_LLAMA_CPP_ENTRY MODEL.gguf '[token, ...]' TEXT
// Prints {"rows": [[logit of token 0, 1, ...] per position], "text_tokens": [...],
//         "bos": id, "eos": id, "add_bos": bool}: the logits after each token of the
// sequence, and llama.cpp's tokenization of TEXT (without special tokens).
import {close, loadModel, logitRows} from "./llama_cpp_common.mjs";

const [entry, modelPath, tokensJson, text] = process.argv.slice(2);
const loaded = await loadModel(entry, modelPath);
const {model} = loaded;
const textTokens = Array.from(model.tokenize(text, false));
const rows = await logitRows(model, JSON.parse(tokensJson));
console.log(JSON.stringify({
    rows,
    text_tokens: textTokens,
    bos: model.tokens.bos,
    eos: model.tokens.eos,
    add_bos: model.tokens.shouldPrependBosToken,
}));
await close(loaded);
