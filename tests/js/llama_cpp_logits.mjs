// llama.cpp's logits for a token sequence, through node-llama-cpp's prebuilt CPU build of
// llama.cpp (the test `build::llama_cpp_converts_and_runs_the_output` drives this through
// tests/py/llama_cpp_check.py).
//
// Usage: node llama_cpp_logits.mjs NODE_LLAMA_CPP_ENTRY MODEL.gguf '[token, ...]'
// Prints {"rows": [[logit of token 0, 1, ...] per position]}.
import {close, loadModel, logitRows} from "./llama_cpp_common.mjs";

const [entry, modelPath, tokensJson] = process.argv.slice(2);
const loaded = await loadModel(entry, modelPath);
const rows = await logitRows(loaded.model, JSON.parse(tokensJson));
console.log(JSON.stringify({rows}));
await close(loaded);
