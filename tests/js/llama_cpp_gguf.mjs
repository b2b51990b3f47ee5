// llama.cpp's view of a GGUF hf-tailor wrote, through node-llama-cpp's prebuilt CPU build of
// llama.cpp (tests/py/gguf_check.py drives this for the test `gguf::*`).
//
// Usage: node llama_cpp_gguf.mjs NODE_LLAMA_CPP_ENTRY MODEL.gguf '[token, ...]' TEXT
// Prints {"rows": [[logit of token 0, 1, ...] per position], "text_tokens": [...],
//         "bos": id, "eos": id, "add_bos": bool}: the logits after each token of the
// sequence, and llama.cpp's tokenization of TEXT (without special tokens).
import {pathToFileURL} from "node:url";

const [entry, modelPath, tokensJson, text] = process.argv.slice(2);
const {getLlama} = await import(pathToFileURL(entry).href);
const tokens = JSON.parse(tokensJson);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath});
const textTokens = Array.from(model.tokenize(text, false));
const context = await model.createContext({contextSize: 256, batchSize: 256, threads: 2});
const sequence = context.getSequence();
const out = await sequence.controlledEvaluate(tokens.map((t) => [t, {generateNext: {logits: true}}]));
const rows = out.map((o) => {
    const row = [];
    for (const [token, logit] of o.next.logits) row[token] = logit;
    return row;
});
console.log(JSON.stringify({
    rows,
    text_tokens: textTokens,
    bos: model.tokens.bos,
    eos: model.tokens.eos,
    add_bos: model.tokens.shouldPrependBosToken,
}));
await context.dispose();
await model.dispose();
await llama.dispose();
