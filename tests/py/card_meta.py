"""Parse a model card with huggingface_hub's ModelCard and its lineage SVG with an XML
parser; print what they hold as JSON (the Rust test checks the fields)."""
import json
import sys
import xml.etree.ElementTree as ET

from huggingface_hub import ModelCard

readme, svg = sys.argv[1], sys.argv[2]
card = ModelCard.load(readme)
data = card.data.to_dict()
evals = [
    {"task_type": e.task_type, "dataset_type": e.dataset_type, "dataset_name": e.dataset_name,
     "metric_type": e.metric_type, "metric_value": e.metric_value, "metric_name": e.metric_name,
     "dataset_config": e.dataset_config, "dataset_split": e.dataset_split, "dataset_args": e.dataset_args}
    for e in (card.data.eval_results or [])
]
root = ET.parse(svg).getroot()
ns = "{http://www.w3.org/2000/svg}"
out = {
    "data": data,
    "model_name": card.data.model_name,
    "eval_results": evals,
    "svg_tag": root.tag,
    "svg_rects": len(root.findall(f"{ns}rect")),
    "svg_title": root.find(f"{ns}title").text,
    "text": card.text,
}
print(json.dumps(out))
