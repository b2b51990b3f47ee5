// llama.cpp's logits for a token sequence, through node-llama-cpp's prebuilt CPU build of
// llama.cpp (the test `build::llama_cpp_converts_and_runs_the_output` drives this through
// tests/py/llama_cpp_check.py).
//
// Usage: node llama_cpp_logits.mjs NODE_LLAMA_CPP_ENTRY MODEL.gguf '[token, ...]'
// Prints {"rows": [[logit of token 0, 1, ...] per position]}.
import {pathToFileURL} from "node:url";

const [entry, modelPath, tokensJson] = process.argv.slice(2);
const {getLlama} = await import(pathToFileURL(entry).href);
const tokens = JSON.parse(tokensJson);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath});
const context = await model.createContext({contextSize: 256, batchSize: 256, threads: 2});
const sequence = context.getSequence();
const out = await sequence.controlledEvaluate(tokens.map((t) => [t, {generateNext: {logits: true}}]));
const rows = out.map((o) => {
    const row = [];
    for (const [token, logit] of o.next.logits) row[token] = logit;
    return row;
});
console.log(JSON.stringify({rows}));
await context.dispose();
await model.dispose();
await llama.dispose();
