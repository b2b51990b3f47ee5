"""Write PyTorch `.bin` checkpoints and their safetensors twins for tests/it/torch_bin.rs.

usage: torch_bin_fixture.py OUT MARKER | --unsafe-load FILE
OUT/st, OUT/bin: a tiny random LlamaForCausalLM (f32), as safetensors and as `torch.save(state_dict)`
  (an OrderedDict with `_metadata`, as transformers < 5 and most Hub `.bin` files hold it);
OUT/st16, OUT/bin16: the same model in bf16, the `.bin` as two shards plus `pytorch_model.bin.index.json`;
OUT/evil: a torch zip whose pickle calls os.system to create MARKER when unpickled;
OUT/trunc: the `.bin` cut in half.
"""
import json, os, shutil, sys
import torch
from transformers import LlamaConfig, LlamaForCausalLM

if sys.argv[1] == "--unsafe-load":  # the control: what an unrestricted loader does with OUT/evil
    torch.load(sys.argv[2], weights_only=False)
    sys.exit(0)
out, marker = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64)
m = LlamaForCausalLM(cfg).eval()
m.save_pretrained(f"{out}/st")
os.makedirs(f"{out}/bin")
shutil.copy(f"{out}/st/config.json", f"{out}/bin/config.json")
torch.save(m.state_dict(), f"{out}/bin/pytorch_model.bin")

m16 = m.to(torch.bfloat16)
m16.save_pretrained(f"{out}/st16")
os.makedirs(f"{out}/bin16")
shutil.copy(f"{out}/st16/config.json", f"{out}/bin16/config.json")
sd = m16.state_dict()
names = sorted(sd)
halves = [names[: len(names) // 2], names[len(names) // 2:]]
weight_map = {}
for i, part in enumerate(halves):
    fname = f"pytorch_model-{i + 1:05d}-of-00002.bin"
    torch.save({k: sd[k].clone() for k in part}, f"{out}/bin16/{fname}")
    weight_map.update({k: fname for k in part})
json.dump({"metadata": {}, "weight_map": weight_map}, open(f"{out}/bin16/pytorch_model.bin.index.json", "w"))


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {marker}",))


os.makedirs(f"{out}/evil")
shutil.copy(f"{out}/st/config.json", f"{out}/evil/config.json")
torch.save({"model.embed_tokens.weight": Evil()}, f"{out}/evil/pytorch_model.bin")

os.makedirs(f"{out}/trunc")
shutil.copy(f"{out}/st/config.json", f"{out}/trunc/config.json")
data = open(f"{out}/bin/pytorch_model.bin", "rb").read()
open(f"{out}/trunc/pytorch_model.bin", "wb").write(data[: len(data) // 2])
