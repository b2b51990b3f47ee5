// What the llama.cpp test scripts share: node-llama-cpp's prebuilt CPU build of llama.cpp,
// one model, and its logits after each token of a sequence.
import {pathToFileURL} from "node:url";

// Load MODEL.gguf through the node-llama-cpp package whose entry point is `entry`.
export async function loadModel(entry, modelPath) {
    const {getLlama} = await import(pathToFileURL(entry).href);
    const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
    const model = await llama.loadModel({modelPath});
    return {llama, model};
}

// [[logit of token 0, 1, ...] per position]: the logits after each token of `tokens`.
export async function logitRows(model, tokens) {
    const context = await model.createContext({contextSize: 256, batchSize: 256, threads: 2});
    const sequence = context.getSequence();
    const out = await sequence.controlledEvaluate(tokens.map((t) => [t, {generateNext: {logits: true}}]));
    const rows = out.map((o) => {
        const row = [];
        for (const [token, logit] of o.next.logits) row[token] = logit;
        return row;
    });
    await context.dispose();
    return rows;
}

export async function close({llama, model}) {
    await model.dispose();
    await llama.dispose();
}
