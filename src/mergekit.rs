//! mergekit YAML, another serialisation of a [`Recipe`].
//!
//! **Export.** A recipe without merges becomes a `passthrough` config whose `slices` list
//! runs of consecutive source layers taken from one model. A recipe with task-arithmetic
//! merges becomes a `task_arithmetic` config with `base_model`, `normalize: false` and one
//! slice per output layer: a layer taken from the base lists the base alone, a layer taken
//! from sibling j lists the base plus j at weight 1.0 (`base + 1·(W_j − base) = W_j`), and a
//! merge lists the base plus each merged sibling at weight λ. mergekit builds embeddings
//! from the first slice's sources and the final norm / lm_head from the last slice's; when
//! the recipe's edges follow other rules, an extra zero-length slice (`layer_range: [0, 0]`)
//! is put first / last to carry them. Methods that one mergekit config cannot mix per layer
//! (linear, SLERP, TIES, DARE next to task arithmetic) are refused with the layer named.
//!
//! **Import.** `passthrough` and `task_arithmetic` configs, in the `slices:` form or the
//! `models:` form (which mergekit expands to one slice over every layer), are read back
//! into a recipe; the source layer count and architecture come from the caller because a
//! mergekit config does not state them.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::dtype::Dtype;
use crate::recipe::{LayerRule, Merge, Recipe, RecipeError, Rule, SourceModel, FORMAT};
use crate::source::ModelSource;

#[derive(Debug, thiserror::Error)]
pub enum MergekitError {
    #[error("mergekit export: {at}: {why}")]
    Export { at: String, why: String },
    #[error("mergekit config does not parse: {0}")]
    Parse(String),
    #[error("mergekit config: {at}: {why}")]
    Import { at: String, why: String },
    #[error("{0}")]
    Recipe(#[from] RecipeError),
}

fn export_err(at: &str, why: impl Into<String>) -> MergekitError {
    MergekitError::Export { at: at.into(), why: why.into() }
}

fn import_err(at: &str, why: impl Into<String>) -> MergekitError {
    MergekitError::Import { at: at.into(), why: why.into() }
}

/// How mergekit refers to a model: `repo` or `repo@revision`.
fn model_ref(m: &SourceModel) -> String {
    m.source.to_string()
}

fn slice_source(model: &str, from: usize, len: usize, weight: Option<f64>) -> Value {
    let mut s = json!({"model": model, "layer_range": [from, from + len]});
    if let Some(w) = weight {
        s["parameters"] = json!({"weight": w});
    }
    s
}

/// Export `recipe` as an equivalent mergekit YAML config. `base_ties_embeddings`: the
/// base's config has `tie_word_embeddings`, None when its config is not at hand. This is the
/// one place that decides whether the tying matters: only when the recipe takes the
/// embeddings and the head from different rules (mergekit then writes no lm_head and keeps
/// a tied base's output tied, while hf-tailor writes it untied, so that recipe cannot be
/// said and is refused); with one rule for both, both tools keep the base's tying.
pub fn export(recipe: &Recipe, base_ties_embeddings: Option<bool>) -> Result<String, MergekitError> {
    recipe.validate()?;
    if recipe.heal.is_some() {
        return Err(export_err("heal", "the recipe carries fitted heal maps, which mergekit cannot express (build it with `hf-tailor build`)"));
    }
    let rules_differ = recipe.embeddings != recipe.head;
    if rules_differ && base_ties_embeddings.is_none() {
        return Err(export_err(
            "head",
            format!(
                "cannot tell whether the base {} ties lm_head to its embeddings: its config.json is neither in a local folder nor in the Hub cache (run `hf-tailor pull` first)",
                recipe.base.source
            ),
        ));
    }
    if rules_differ && base_ties_embeddings == Some(true) {
        return Err(export_err(
            "head",
            format!(
                "the base ties lm_head to its embeddings and the recipe takes them from different rules (embeddings {}, head {}): \
                 hf-tailor unties them, mergekit keeps them tied, so its model would differ",
                recipe.embeddings.label(),
                recipe.head.label()
            ),
        ));
    }
    let refs: BTreeMap<&str, String> = recipe.models().map(|m| (m.name.as_str(), model_ref(m))).collect();
    let uses_merges = recipe.layers.iter().any(|l| l.rule.is_merge()) || recipe.embeddings.is_merge() || recipe.head.is_merge();
    let mut config = serde_json::Map::new();
    let slices = if uses_merges {
        config.insert("merge_method".into(), json!("task_arithmetic"));
        config.insert("base_model".into(), json!(refs[recipe.base.name.as_str()]));
        config.insert("parameters".into(), json!({"normalize": false}));
        task_arithmetic_slices(recipe, &refs)?
    } else {
        config.insert("merge_method".into(), json!("passthrough"));
        passthrough_slices(recipe, &refs)
    };
    config.insert("slices".into(), Value::Array(slices));
    if let Some(d) = recipe.dtype {
        config.insert("dtype".into(), json!(d.torch_name()));
    }
    let yaml = flow_layer_ranges(&serde_norway::to_string(&Value::Object(config)).expect("JSON values serialise as YAML"));
    Ok(format!("# mergekit config equivalent to an hf-tailor recipe ({} of {} layers kept).\n{yaml}", recipe.layers.len(), recipe.source_layers))
}

/// Write `layer_range` as `[a, b]`, as mergekit configs are usually written, instead of
/// the two-line block sequence the serializer emits.
fn flow_layer_ranges(yaml: &str) -> String {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = String::with_capacity(yaml.len());
    let mut i = 0;
    while i < lines.len() {
        let item = |l: &str| l.trim_start().strip_prefix("- ").filter(|v| v.parse::<u64>().is_ok()).map(str::to_owned);
        if lines[i].trim_end().ends_with("layer_range:") && i + 2 < lines.len() {
            if let (Some(a), Some(b)) = (item(lines[i + 1]), item(lines[i + 2])) {
                out.push_str(&format!("{} [{a}, {b}]\n", lines[i].trim_end()));
                i += 3;
                continue;
            }
        }
        out.push_str(lines[i]);
        out.push('\n');
        i += 1;
    }
    out
}

fn passthrough_slices(recipe: &Recipe, refs: &BTreeMap<&str, String>) -> Vec<Value> {
    let take = |r: &Rule| match r {
        Rule::Take(m) => m.clone(),
        Rule::Merge(_) => unreachable!("passthrough export is chosen only without merges"),
    };
    // Runs of consecutive source layers from the same model become one slice.
    let mut runs: Vec<(String, usize, usize)> = Vec::new();
    for l in &recipe.layers {
        let m = take(&l.rule);
        match runs.last_mut() {
            Some((rm, from, len)) if *rm == m && *from + *len == l.from => *len += 1,
            _ => runs.push((m, l.from, 1)),
        }
    }
    let mut slices: Vec<Value> = runs.iter().map(|(m, from, len)| json!({"sources": [slice_source(&refs[m.as_str()], *from, *len, None)]})).collect();
    let edge = |r: &Rule| json!({"sources": [slice_source(&refs[take(r).as_str()], 0, 0, None)]});
    if recipe.embeddings != recipe.layers[0].rule {
        slices.insert(0, edge(&recipe.embeddings));
    }
    if recipe.head != recipe.layers[recipe.layers.len() - 1].rule {
        slices.push(edge(&recipe.head));
    }
    slices
}

fn task_arithmetic_slices(recipe: &Recipe, refs: &BTreeMap<&str, String>) -> Result<Vec<Value>, MergekitError> {
    let base = recipe.base.name.as_str();
    let sources = |at: &str, rule: &Rule, from: usize, len: usize| -> Result<Value, MergekitError> {
        let mut s = vec![slice_source(&refs[base], from, len, None)];
        match rule {
            Rule::Take(m) if m == base => {}
            Rule::Take(m) => s.push(slice_source(&refs[m.as_str()], from, len, Some(1.0))),
            Rule::Merge(Merge::TaskArithmetic { models, lambda }) => {
                for m in models {
                    s.push(slice_source(&refs[m.as_str()], from, len, Some(*lambda)));
                }
            }
            Rule::Merge(other) => {
                return Err(export_err(
                    at,
                    format!("a `{}` merge cannot be expressed in a mergekit task_arithmetic config (one method per config)", other.method_name()),
                ))
            }
        }
        Ok(json!({"sources": s}))
    };
    let mut slices = Vec::new();
    if recipe.embeddings != recipe.layers[0].rule {
        slices.push(sources("embeddings", &recipe.embeddings, 0, 0)?);
    }
    for (i, l) in recipe.layers.iter().enumerate() {
        slices.push(sources(&format!("layers[{i}]"), &l.rule, l.from, 1)?);
    }
    if recipe.head != recipe.layers[recipe.layers.len() - 1].rule {
        slices.push(sources("head", &recipe.head, 0, 0)?);
    }
    pad_first_slice(&mut slices);
    Ok(slices)
}

/// mergekit merges the final norm and lm_head over the last slice's sources but counts
/// them by the first slice's, so a first slice with fewer sources silently drops the last
/// slice's extra models from the head. Give the first slice those models at weight 0 (in
/// task arithmetic `base + 0·(W − base)` is the base's value exactly; import skips them).
fn pad_first_slice(slices: &mut [Value]) {
    let models = |s: &Value| -> Vec<String> {
        s["sources"].as_array().map(|a| a.iter().filter_map(|x| x["model"].as_str().map(str::to_owned)).collect()).unwrap_or_default()
    };
    let (Some(first), Some(last)) = (slices.first(), slices.last()) else { return };
    let (have, want) = (models(first), models(last));
    if have.len() >= want.len() {
        return;
    }
    let range = first["sources"][0]["layer_range"].clone();
    let missing: Vec<String> = want.into_iter().filter(|m| !have.contains(m)).collect();
    let sources = slices[0]["sources"].as_array_mut().expect("slices have sources");
    for m in missing {
        sources.push(json!({"model": m, "layer_range": range, "parameters": {"weight": 0.0}}));
    }
}

/// What a mergekit config does not say and a recipe needs: the sources' depth and
/// architecture, given or read from the base's config.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Decoder layers in the source models (default: the base config's).
    pub source_layers: Option<usize>,
    /// `model_type` of the sources (default: the base config's).
    pub architecture: Option<String>,
    /// The base's config.json, when it is reachable (a local folder or the Hub cache).
    pub base_config: Option<crate::config::ModelConfig>,
}

/// The base of a mergekit config (`base_model`, else the first model it names), so that the
/// caller can find the base's config.json before importing.
pub fn base_source(text: &str) -> Result<ModelSource, MergekitError> {
    let cfg: Value = serde_norway::from_str(text).map_err(|e| import_err("config", e.to_string()))?;
    fn first_model(v: Option<&Value>) -> Option<&str> {
        v.and_then(Value::as_array).and_then(|a| a.first()).and_then(|m| m.get("model")).and_then(Value::as_str)
    }
    let first = cfg
        .get("base_model")
        .and_then(Value::as_str)
        .or_else(|| first_model(cfg.get("models")))
        .or_else(|| cfg.get("slices").and_then(Value::as_array).and_then(|s| s.first()).and_then(|s| first_model(s.get("sources"))));
    let r = first.ok_or_else(|| import_err("base_model", "names no model"))?;
    let (repo, revision) = parse_ref(r);
    Ok(match revision {
        Some(rev) => ModelSource::hub(&repo, Some(&rev)).unwrap_or(ModelSource::Local(r.into())),
        None => ModelSource::parse(&repo).unwrap_or(ModelSource::Local(repo.into())),
    })
}

/// One input slice of a mergekit config.
struct InputSlice {
    model: String,
    range: (usize, usize),
    weight: Option<f64>,
}

/// Parse `repo@revision` into (repo, revision).
fn parse_ref(s: &str) -> (String, Option<String>) {
    // Only a trailing `@rev` after the last `/` is a revision (paths may contain `@`).
    match s.rsplit_once('@') {
        Some((repo, rev)) if !rev.is_empty() && !rev.contains('/') && !repo.is_empty() => (repo.into(), Some(rev.into())),
        _ => (s.into(), None),
    }
}

/// A recipe name for a model: the last component of its repo id or path.
fn derive_name(repo: &str, taken: &[String]) -> String {
    let last = repo.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let clean: String = last.chars().map(|c| if c.is_alphanumeric() || "._-".contains(c) { c } else { '-' }).collect();
    let stem = if clean.is_empty() { "model".to_string() } else { clean };
    let mut name = stem.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{stem}-{n}");
        n += 1;
    }
    name
}

fn scalar_weight(v: Option<&Value>, at: &str) -> Result<Option<f64>, MergekitError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(import_err(at, format!("weight {other} is not a single number (gradients and per-tensor filters cannot be imported)"))),
    }
}

fn parse_source(v: &Value, at: &str, default_weight: Option<f64>, full_range: Option<usize>) -> Result<InputSlice, MergekitError> {
    let model = v.get("model").and_then(Value::as_str).ok_or_else(|| import_err(at, "`model` is missing or not a string"))?;
    let range = match (v.get("layer_range"), full_range) {
        (Some(r), _) => {
            let a = r.as_array().filter(|a| a.len() == 2).and_then(|a| Some((a[0].as_u64()? as usize, a[1].as_u64()? as usize)));
            match a {
                Some((x, y)) if x <= y => (x, y),
                _ => return Err(import_err(&format!("{at}.layer_range"), format!("{r} is not [start, end] with start <= end"))),
            }
        }
        (None, Some(n)) => (0, n),
        (None, None) => return Err(import_err(at, "`layer_range` is missing")),
    };
    let weight = scalar_weight(v.get("parameters").and_then(|p| p.get("weight")), &format!("{at}.parameters.weight"))?.or(default_weight);
    Ok(InputSlice { model: model.into(), range, weight })
}

/// Import a mergekit `passthrough` or `task_arithmetic` config as a recipe.
pub fn import(text: &str, opts: &ImportOptions) -> Result<Recipe, MergekitError> {
    if let Some(why) = crate::limits::yaml_problem(text) {
        return Err(MergekitError::Parse(why));
    }
    let cfg: Value = serde_norway::from_str(text).map_err(|e| MergekitError::Parse(e.to_string()))?;
    let method = cfg.get("merge_method").and_then(Value::as_str).ok_or_else(|| import_err("merge_method", "is missing"))?;
    let task_arithmetic = match method {
        "passthrough" => false,
        "task_arithmetic" => true,
        other => {
            return Err(import_err("merge_method", format!("`{other}` cannot be imported (only passthrough and task_arithmetic map onto a recipe)")))
        }
    };
    let params = cfg.get("parameters");
    if task_arithmetic && params.and_then(|p| p.get("normalize")).and_then(Value::as_bool) == Some(true) {
        return Err(import_err("parameters.normalize", "normalize: true divides by the weight sum, which is not task arithmetic on the base"));
    }
    let lambda = scalar_weight(params.and_then(|p| p.get("lambda")), "parameters.lambda")?.unwrap_or(1.0);
    let global_weight = scalar_weight(params.and_then(|p| p.get("weight")), "parameters.weight")?;
    let base_ref = cfg.get("base_model").and_then(Value::as_str).map(str::to_owned);
    if task_arithmetic && base_ref.is_none() {
        return Err(import_err("base_model", "task_arithmetic needs a base_model"));
    }

    let base_config = opts.base_config.as_ref();
    let architecture = match (&opts.architecture, base_config) {
        (Some(a), _) => a.clone(),
        (None, Some(c)) => c.arch.model_type.to_string(),
        (None, None) => {
            return Err(import_err(
                "base_model",
                format!(
                    "the base's config.json is not reachable (not a local folder or cached): pass the architecture ({})",
                    crate::arch::supported_list()
                ),
            ))
        }
    };
    let source_layers = match (opts.source_layers, base_config) {
        (Some(n), _) => n,
        (None, Some(c)) => c.num_hidden_layers,
        (None, None) => {
            return Err(import_err("base_model", "the base's config.json is not reachable (not a local folder or cached): pass --source-layers"))
        }
    };
    // Checked before any layer is made from it.
    if source_layers == 0 || source_layers > crate::limits::MAX_LAYERS {
        return Err(import_err(
            "source layers",
            format!("{source_layers} is not between 1 and {} (the most layers hf-tailor accepts)", crate::limits::MAX_LAYERS),
        ));
    }

    // Both forms become a list of output slices, each a list of input slices.
    let mut slices: Vec<Vec<InputSlice>> = Vec::new();
    match (cfg.get("slices"), cfg.get("models")) {
        (Some(_), Some(_)) => return Err(import_err("slices", "give either `slices` or `models`, not both")),
        (Some(Value::Array(list)), None) => {
            for (i, s) in list.iter().enumerate() {
                let at = format!("slices[{i}]");
                let slice_weight = scalar_weight(s.get("parameters").and_then(|p| p.get("weight")), &format!("{at}.parameters.weight"))?;
                let srcs = s.get("sources").and_then(Value::as_array).ok_or_else(|| import_err(&at, "`sources` is missing"))?;
                let parsed = srcs
                    .iter()
                    .enumerate()
                    .map(|(j, v)| parse_source(v, &format!("{at}.sources[{j}]"), slice_weight.or(global_weight), None))
                    .collect::<Result<Vec<_>, _>>()?;
                slices.push(parsed);
            }
        }
        (None, Some(Value::Array(list))) => {
            let mut srcs = list
                .iter()
                .enumerate()
                .map(|(j, v)| parse_source(v, &format!("models[{j}]"), global_weight, Some(source_layers)))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(b) = &base_ref {
                if !srcs.iter().any(|s| &s.model == b) {
                    srcs.push(InputSlice { model: b.clone(), range: (0, source_layers), weight: None });
                }
            }
            slices.push(srcs);
        }
        _ => return Err(import_err("slices", "a list of `slices` (or `models`) is required")),
    }
    if slices.is_empty() {
        return Err(import_err("slices", "is empty"));
    }

    // Models: the base first (base_model, else the first model named), then the others in order.
    let mut order: Vec<String> = base_ref.iter().cloned().collect();
    for s in slices.iter().flatten() {
        if !order.contains(&s.model) {
            order.push(s.model.clone());
        }
    }
    let mut names: Vec<String> = Vec::new();
    let mut models = Vec::new();
    for r in &order {
        let (repo, revision) = parse_ref(r);
        let name = derive_name(&repo, &names);
        names.push(name.clone());
        // A mergekit model is a Hub id (optionally `@revision`) or a path, as in mergekit.
        let source = match revision {
            Some(rev) => {
                ModelSource::hub(&repo, Some(&rev)).ok_or_else(|| import_err("models", format!("`{r}` is not a Hub repo id with a revision")))?
            }
            None => ModelSource::parse(&repo).unwrap_or(ModelSource::Local(repo.clone().into())),
        };
        models.push(SourceModel::new(&name, source));
    }
    let name_of: BTreeMap<&str, &str> = order.iter().map(String::as_str).zip(names.iter().map(String::as_str)).collect();
    let base_name = names[0].clone();

    let mut layers = Vec::new();
    let mut slice_rules = Vec::new();
    for (i, srcs) in slices.iter().enumerate() {
        let at = format!("slices[{i}]");
        let (from, to) = srcs.first().map(|s| s.range).ok_or_else(|| import_err(&at, "has no sources"))?;
        if let Some(s) = srcs.iter().find(|s| s.range != (from, to)) {
            return Err(import_err(
                &at,
                format!(
                    "{} uses layers {:?} but {} uses {:?}; a recipe layer reads the same source layer from every model",
                    s.model,
                    s.range,
                    srcs[0].model,
                    (from, to)
                ),
            ));
        }
        let rule = if task_arithmetic {
            task_arithmetic_rule(srcs, &at, &name_of, &base_name, lambda)?
        } else {
            if srcs.len() != 1 {
                return Err(import_err(&at, format!("passthrough takes one source per slice, found {}", srcs.len())));
            }
            Rule::Take(name_of[srcs[0].model.as_str()].to_string())
        };
        // Checked before the layers are made: a range is never longer than the sources.
        if to > source_layers {
            return Err(import_err(&format!("{at}.layer_range"), format!("[{from}, {to}] is out of range: the sources have {source_layers} layers")));
        }
        if layers.len() + (to - from) > crate::limits::MAX_LAYERS {
            return Err(import_err(&at, format!("the slices make more than {} layers", crate::limits::MAX_LAYERS)));
        }
        for l in from..to {
            layers.push(LayerRule { from: l, rule: rule.clone() });
        }
        slice_rules.push(rule);
    }
    let dtype = match cfg.get("dtype").and_then(Value::as_str) {
        None => None,
        Some(d) => Some(Dtype::parse(d).ok_or_else(|| import_err("dtype", format!("`{d}` is not float32, float16 or bfloat16")))?),
    };
    let mut models = models.into_iter();
    let recipe = Recipe {
        format: FORMAT.into(),
        architecture,
        source_layers,
        base: models.next().expect("at least one model"),
        siblings: models.collect(),
        layers,
        embeddings: slice_rules[0].clone(),
        head: slice_rules[slice_rules.len() - 1].clone(),
        dtype,
        tokenizer_source: None,
        chat_template: None,
        heal: None,
    };
    recipe.validate()?;
    Ok(recipe)
}

/// The rule a task_arithmetic slice describes: base alone, one sibling at weight 1, or
/// siblings sharing one weight λ.
fn task_arithmetic_rule(srcs: &[InputSlice], at: &str, name_of: &BTreeMap<&str, &str>, base: &str, lambda: f64) -> Result<Rule, MergekitError> {
    if !srcs.iter().any(|s| name_of[s.model.as_str()] == base) {
        return Err(import_err(at, "the base_model is not among the sources; task arithmetic needs it as the anchor"));
    }
    let mut merged: Vec<(String, f64)> = Vec::new();
    for s in srcs.iter().filter(|s| name_of[s.model.as_str()] != base) {
        let w = s.weight.ok_or_else(|| import_err(at, format!("{} has no weight", s.model)))? * lambda;
        if w != 0.0 {
            merged.push((name_of[s.model.as_str()].to_string(), w));
        }
    }
    Ok(match merged.as_slice() {
        [] => Rule::Take(base.into()),
        [(m, w)] if *w == 1.0 => Rule::Take(m.clone()),
        [(_, w), rest @ ..] => {
            if let Some((m, other)) = rest.iter().find(|(_, x)| x != w) {
                return Err(import_err(at, format!("{m} has weight {other} but another model {w}; a recipe merge uses one λ per layer")));
            }
            Rule::Merge(Merge::TaskArithmetic { models: merged.iter().map(|(m, _)| m.clone()).collect(), lambda: *w })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::EdgePolicy;

    fn src(name: &str) -> SourceModel {
        SourceModel::hub(name, &format!("org/{name}"), None)
    }

    fn opts() -> ImportOptions {
        ImportOptions { source_layers: Some(6), architecture: Some("llama".into()), base_config: None }
    }

    fn layers(spec: &[(usize, Rule)]) -> Vec<LayerRule> {
        spec.iter().map(|(f, r)| LayerRule { from: *f, rule: r.clone() }).collect()
    }

    fn take(m: &str) -> Rule {
        Rule::Take(m.into())
    }

    fn ta(models: &[&str], lambda: f64) -> Rule {
        Rule::Merge(Merge::TaskArithmetic { models: models.iter().map(|m| m.to_string()).collect(), lambda })
    }

    #[test]
    fn depth_and_architecture_come_from_the_base_config_when_not_given() {
        let yaml = "merge_method: passthrough\nslices:\n- sources:\n  - model: org/base\n    layer_range: [0, 3]\n";
        let raw = json!({"model_type": "qwen2", "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 5,
            "num_attention_heads": 2, "vocab_size": 20});
        let config = crate::config::ModelConfig::from_value(raw, "t").unwrap();
        let r = import(yaml, &ImportOptions { base_config: Some(config), ..ImportOptions::default() }).unwrap();
        assert_eq!((r.architecture.as_str(), r.source_layers, r.layers.len()), ("qwen2", 5, 3));
        assert_eq!(base_source(yaml).unwrap(), ModelSource::Hub { repo: "org/base".into(), revision: None });
        let e = import(yaml, &ImportOptions::default()).unwrap_err().to_string();
        assert!(e.contains("architecture") || e.contains("--source-layers"), "{e}");
    }

    #[test]
    fn passthrough_round_trip_groups_runs() {
        let base = SourceModel::hub("base", "org/base", Some("abc123"));
        let mut r = Recipe::new(
            "llama",
            6,
            base,
            vec![src("wiz")],
            layers(&[(0, take("base")), (1, take("base")), (2, take("wiz")), (3, take("wiz")), (5, take("base"))]),
            EdgePolicy::FollowLayers,
        );
        r.dtype = Some(Dtype::Bf16);
        let y = export(&r, Some(false)).unwrap();
        assert!(y.contains("merge_method: passthrough"), "{y}");
        assert!(y.contains("org/base@abc123"), "{y}");
        assert_eq!(y.matches("layer_range").count(), 3, "three runs: {y}");
        assert!(y.contains("layer_range: [2, 4]"), "{y}");
        assert_eq!(import(&y, &opts()).unwrap(), r);
    }

    #[test]
    fn task_arithmetic_round_trip_with_edges_off_the_layers() {
        let mut r = Recipe::new(
            "llama",
            6,
            src("base"),
            vec![src("a"), src("b")],
            layers(&[(0, take("a")), (2, ta(&["a", "b"], 0.6)), (3, take("base")), (5, take("b"))]),
            EdgePolicy::Base,
        );
        let y = export(&r, Some(false)).unwrap();
        assert!(y.contains("merge_method: task_arithmetic") && y.contains("normalize: false") && y.contains("base_model: org/base"), "{y}");
        // Embeddings from the base while layer 0 takes `a`, head from the base while the last takes `b`:
        // zero-length slices first and last carry them.
        let v: Value = serde_norway::from_str(&y).unwrap();
        let slices = v["slices"].as_array().unwrap();
        assert_eq!(slices.len(), 6);
        for s in [&slices[0], &slices[5]] {
            assert_eq!(s["sources"], json!([{"model": "org/base", "layer_range": [0, 0]}]), "{y}");
        }
        assert_eq!(slices[2]["sources"][1], json!({"model": "org/a", "layer_range": [2, 3], "parameters": {"weight": 0.6}}));
        assert_eq!(import(&y, &opts()).unwrap(), r);
        r.embeddings = take("a");
        r.head = ta(&["a", "b"], 0.25);
        assert_eq!(import(&export(&r, Some(false)).unwrap(), &opts()).unwrap(), r);
    }

    #[test]
    fn the_first_slice_lists_every_model_of_the_last_so_mergekit_merges_the_whole_head() {
        // The head follows the last layer, a merge of a and b; the first slice takes the base.
        let r = Recipe::new(
            "llama",
            6,
            src("base"),
            vec![src("a"), src("b")],
            layers(&[(0, take("base")), (4, ta(&["a", "b"], 0.5))]),
            EdgePolicy::FollowLayers,
        );
        let y = export(&r, Some(false)).unwrap();
        let v: Value = serde_norway::from_str(&y).unwrap();
        let first = v["slices"][0]["sources"].as_array().unwrap();
        assert_eq!(first.len(), v["slices"][1]["sources"].as_array().unwrap().len(), "{y}");
        assert_eq!(first[1], json!({"model": "org/a", "layer_range": [0, 1], "parameters": {"weight": 0.0}}), "{y}");
        assert_eq!(first[2], json!({"model": "org/b", "layer_range": [0, 1], "parameters": {"weight": 0.0}}), "{y}");
        // Weight 0 is no merge: the import reads the base's layer back.
        assert_eq!(import(&y, &opts()).unwrap(), r);
    }

    #[test]
    fn a_tied_base_with_edges_from_two_rules_is_refused() {
        let mut r = Recipe::new("llama", 6, src("base"), vec![src("a")], layers(&[(0, take("a")), (3, take("base"))]), EdgePolicy::FollowLayers);
        let e = export(&r, Some(true)).unwrap_err().to_string();
        assert!(e.contains("ties lm_head to its embeddings") && e.contains("embeddings a, head base"), "{e}");
        assert!(export(&r, Some(false)).is_ok(), "an untied base has its own lm_head");
        let e = export(&r, None).unwrap_err().to_string();
        assert!(e.contains("cannot tell whether the base"), "two rules need the base's tying: {e}");
        r.head = r.embeddings.clone();
        assert!(export(&r, Some(true)).is_ok(), "one rule for both edges stays tied in both tools");
        assert_eq!(export(&r, None).unwrap(), export(&r, Some(false)).unwrap(), "one rule: the tying decides nothing");
    }

    #[test]
    fn methods_mergekit_cannot_mix_are_refused() {
        let r = Recipe::new(
            "llama",
            6,
            src("base"),
            vec![src("a"), src("b")],
            layers(&[(0, take("a")), (1, Rule::Merge(Merge::Slerp { models: vec!["a".into(), "b".into()], t: 0.5 }))]),
            EdgePolicy::Base,
        );
        let e = export(&r, Some(false)).unwrap_err().to_string();
        assert!(e.contains("layers[1]") && e.contains("slerp"), "{e}");
    }

    #[test]
    fn imports_the_models_form_and_rejects_what_a_recipe_cannot_say() {
        let y = "merge_method: task_arithmetic\nbase_model: org/base\nmodels:\n  - model: org/a\n    parameters: {weight: 0.5}\n  - model: org/b\n    parameters: {weight: 0.5}\ndtype: float16\n";
        let r = import(y, &opts()).unwrap();
        assert_eq!(r.layers.len(), 6);
        assert!(r.layers.iter().enumerate().all(|(i, l)| l.from == i && l.rule == ta(&["a", "b"], 0.5)));
        assert_eq!(r.embeddings, ta(&["a", "b"], 0.5));
        assert_eq!(r.dtype, Some(Dtype::F16));
        let y = "merge_method: passthrough\nmodels:\n  - model: org/only\n";
        assert!(import(y, &opts()).unwrap().layers.iter().all(|l| l.rule == take("only")));

        let bad = [
            ("merge_method: slerp\nmodels: []\n", "slerp"),
            ("merge_method: task_arithmetic\nbase_model: org/base\nmodels:\n  - model: org/a\n    parameters: {weight: 0.5}\n  - model: org/b\n    parameters: {weight: 0.3}\n", "one λ"),
            ("merge_method: task_arithmetic\nbase_model: org/base\nparameters: {normalize: true}\nmodels:\n  - model: org/a\n    parameters: {weight: 1}\n", "normalize"),
            ("merge_method: passthrough\nslices:\n  - sources:\n      - model: org/a\n        layer_range: [4, 9]\n", "out of range"),
            ("merge_method: task_arithmetic\nbase_model: org/base\nslices:\n  - sources:\n      - model: org/base\n        layer_range: [0, 2]\n      - model: org/a\n        layer_range: [1, 3]\n        parameters: {weight: 1}\n", "same source layer"),
            ("merge_method: task_arithmetic\nbase_model: org/base\nmodels:\n  - model: org/a\n    parameters: {weight: [0, 1]}\n", "single number"),
        ];
        for (y, want) in bad {
            let e = import(y, &opts()).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
    }
}
