//! How every stage opens what the previous stage wrote: recipe sources are resolved by
//! `hub::locate` exactly as `search` resolves them (a folder as it is; a Hub model from the
//! cache, downloaded unless offline), and a recipe file may also be a mergekit YAML, as a
//! mergekit user would type it.

use std::path::Path;

use anyhow::Context;
use hf_tailor::checkpoint::{CheckpointError, Family};
use hf_tailor::config::ModelConfig;
use hf_tailor::hub::{self, HubConfig};
use hf_tailor::mergekit::{self, ImportOptions};
use hf_tailor::recipe::{Recipe, SourceModel};
use hf_tailor::source::ModelSource;

/// The folder of a recipe source (see the module docs).
pub fn locate(m: &SourceModel) -> Result<std::path::PathBuf, CheckpointError> {
    hub::locate(m, &HubConfig::from_env())
        .map_err(|e| CheckpointError::NotAModel { path: m.source.to_string(), why: format!("model `{}`: {e}", m.name) })
}

/// Open every model `recipe` names, checked as one family.
pub fn open_family(recipe: &Recipe) -> anyhow::Result<Family> {
    Ok(Family::open_for_recipe(recipe, locate)?)
}

/// True when a YAML text is a mergekit config rather than an hf-tailor recipe.
fn is_mergekit(text: &str) -> bool {
    let Ok(serde_json::Value::Object(map)) = serde_norway::from_str::<serde_json::Value>(text) else { return false };
    !map.contains_key("format") && (map.contains_key("merge_method") || map.contains_key("slices"))
}

/// A recipe file, or a mergekit config (detected by its keys: `merge_method` / `slices` and
/// no `format`) imported with the base's depth and architecture from its config.json.
pub fn load_recipe(path: &Path) -> anyhow::Result<Recipe> {
    let text = match hf_tailor::fsutil::read_text_input(path, hf_tailor::limits::MAX_CONFIG_BYTES as u64) {
        Ok(t) => t,
        Err(_) => return Ok(Recipe::load(path)?), // its error says what is wrong with the file
    };
    // A text refused before parsing is refused by the recipe loader, which says why
    // (telling a mergekit config apart parses it, and deep nesting makes that slow).
    if hf_tailor::limits::yaml_problem(&text).is_some() || !is_mergekit(&text) {
        return Ok(Recipe::load(path)?);
    }
    let opts = ImportOptions { base_config: Some(base_config(&mergekit::base_source(&text)?)?), ..ImportOptions::default() };
    mergekit::import(&text, &opts).with_context(|| format!("importing mergekit config {}", path.display()))
}

/// The config.json of a model that is reachable without a download (a local folder, or a
/// Hub model in the cache).
pub fn cached_config(source: &ModelSource) -> Option<ModelConfig> {
    let mut cfg = HubConfig::from_env();
    cfg.offline = true;
    ModelConfig::from_file(&hub::pull::fetch_config(&cfg, source).ok()?).ok()
}

/// The config.json of a mergekit config's base model: a local folder's, or a Hub model's
/// (cache, then download of config.json alone; offline, the cache only). The error names
/// the model it could not reach.
pub fn base_config(source: &ModelSource) -> anyhow::Result<ModelConfig> {
    let path = hub::pull::fetch_config(&HubConfig::from_env(), source).with_context(|| format!("the mergekit config's base model `{source}`"))?;
    Ok(ModelConfig::from_file(&path)?)
}
