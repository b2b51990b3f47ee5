//! The card's YAML metadata (what the Hub indexes): built as data and serialised, never
//! pasted together as text, so any model name or license string stays valid YAML.

use serde_json::{json, Map, Value};

use super::CardInput;
use crate::score::ResultKind;

/// License fields copied from the base's card front matter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct License {
    /// SPDX-like id the Hub knows (`llama2`, `apache-2.0`, `other`, …).
    pub id: String,
    /// `license_name` / `license_link` accompany `license: other`.
    pub name: Option<String>,
    pub link: Option<String>,
}

/// Split a README into (front matter YAML, body); None when it has no `---` block.
pub fn split_front_matter(readme: &str) -> Option<(&str, &str)> {
    let text = readme.strip_prefix('\u{feff}').unwrap_or(readme);
    let rest = text.strip_prefix("---\n").or_else(|| text.strip_prefix("---\r\n"))?;
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            return Some((&rest[..offset], &rest[offset + line.len()..]));
        }
        offset += line.len();
    }
    None
}

/// The license a model card declares, if any.
pub fn license_from_readme(readme: &str) -> Option<License> {
    let (yaml, _) = split_front_matter(readme)?;
    let meta: Value = serde_norway::from_str(yaml).ok()?;
    let text = |k: &str| meta.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let id = match meta.get("license")? {
        Value::String(s) => s.clone(),
        // Some cards list several; the first is what the Hub shows.
        Value::Array(a) => a.first()?.as_str()?.to_string(),
        _ => return None,
    };
    Some(License { id, name: text("license_name"), link: text("license_link") })
}

/// The front matter as YAML text (without the `---` fences).
pub fn render(input: &CardInput) -> String {
    let r = &input.recipe;
    let mut m = Map::new();
    // The Hub rejects `base_model` entries that are not repo ids, so local folders (the demo,
    // private checkouts) are listed only in the card's sources table, never in the metadata.
    let base_models: Vec<Value> = r.models().filter_map(|s| s.source.repo_id()).map(|id| Value::String(id.to_string())).collect();
    if !base_models.is_empty() {
        m.insert("base_model".into(), Value::Array(base_models));
        m.insert("base_model_relation".into(), json!("merge"));
    }
    m.insert("library_name".into(), json!("transformers"));
    m.insert("pipeline_tag".into(), json!("text-generation"));
    if let Some(l) = &input.license {
        m.insert("license".into(), json!(l.id));
        if let Some(n) = &l.name {
            m.insert("license_name".into(), json!(n));
        }
        if let Some(k) = &l.link {
            m.insert("license_link".into(), json!(k));
        }
    }
    let mut tags: Vec<String> = ["merge", "pruned", "hf-tailor", "layer-pruning"].map(String::from).to_vec();
    tags.extend(r.merge_methods().iter().map(|m| m.name.replace('_', "-")));
    tags.push(r.architecture.clone());
    m.insert("tags".into(), json!(tags));
    if let Some(index) = model_index(input) {
        m.insert("model-index".into(), index);
    }
    serde_norway::to_string(&Value::Object(m)).expect("JSON values serialise to YAML")
}

/// `model-index` with the tailored model's scores (the Hub's evaluation widget reads it).
fn model_index(input: &CardInput) -> Option<Value> {
    let tailored = input.results.iter().find(|r| r.kind == ResultKind::Tailored)?;
    // Scores on items the search chose on are no evaluation: they stay out of the index.
    if tailored.scores.is_empty() || !input.results_held_out {
        return None;
    }
    let results: Vec<Value> = tailored
        .scores
        .iter()
        .map(|(task, score)| {
            let a = input.about(task);
            let mut dataset = json!({"name": a.title, "type": a.dataset, "args": {"num_few_shot": a.num_fewshot}});
            if let Some(c) = &a.config {
                dataset["config"] = json!(c);
            }
            if let Some(sp) = &a.split {
                dataset["split"] = json!(sp);
            }
            // The name says where the number comes from (held-out items), its error and the
            // chance level, since the Hub's widget shows the value without the card's text.
            let mut notes: Vec<String> = Vec::new();
            if let Some(se) = tailored.se.get(task) {
                notes.push(format!("± {:.1} points s.e.", 100.0 * se));
            }
            notes.push(match tailored.items.get(task) {
                Some(n) => format!("{n} items"),
                None => "held-out items".into(),
            });
            if let Some(c) = a.chance {
                notes.push(format!("chance {}", super::pct_label(c)));
            }
            let name = format!("accuracy on held-out items ({})", notes.join(", "));
            json!({
                "task": {"type": "text-generation", "name": "Text Generation"},
                "dataset": dataset,
                "metrics": [{"type": "acc", "value": (score * 10000.0).round() / 10000.0, "name": name}],
                "source": {"name": "hf-tailor evaluation on held-out items", "url": "https://github.com/hf-tailor/hf-tailor"}
            })
        })
        .collect();
    Some(json!([{"name": input.title, "results": results}]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn license_comes_from_front_matter() {
        let readme = "---\nlanguage: en\nlicense: llama2\ntags:\n- x\n---\n# Llama\n";
        assert_eq!(license_from_readme(readme), Some(License { id: "llama2".into(), name: None, link: None }));
        let other = "---\nlicense: other\nlicense_name: tongyi\nlicense_link: https://x/LICENSE\n---\n";
        assert_eq!(license_from_readme(other).unwrap().name.as_deref(), Some("tongyi"));
        assert_eq!(license_from_readme("# no front matter\n"), None);
        assert_eq!(license_from_readme("---\nlanguage: en\n---\n"), None);
        assert_eq!(split_front_matter("---\na: 1\n---\nbody").unwrap(), ("a: 1\n", "body"));
    }
}
