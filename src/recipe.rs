//! The recipe: the one data type that flows from search to evaluator, writer, card and push.
//!
//! It fully describes a tailored model: the source models (with resolved revisions and file
//! hashes), and for every output layer which source layer it comes from and by which rule
//! (take the base's layer, take a sibling's layer, or merge several siblings on the base).
//! Human-readable as YAML (and JSON); see `mergekit.rs` for the mergekit serialisation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dtype::Dtype;
use crate::source::ModelSource;

/// Written in every recipe so future formats can be told apart.
pub const FORMAT: &str = "hf-tailor/recipe-v1";

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("cannot read recipe {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("recipe {path} does not parse: {message}")]
    Parse { path: String, message: String },
    #[error("recipe: {at}: {message}")]
    Invalid { at: String, message: String },
    #[error("recipe {recipe}: heal: {message}")]
    Heal { recipe: String, message: String },
}

/// A model the recipe draws from: a Hub repo at a revision or a local folder
/// ([`ModelSource`]). In YAML a Hub model is `repo: org/name` with `revision: SHA`, a
/// local one `path: DIR` (relative paths are relative to the recipe's folder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SourceRepr", into = "SourceRepr")]
pub struct SourceModel {
    /// Short handle used by the rules (`take: wizardlm`).
    pub name: String,
    pub source: ModelSource,
    /// sha256 of each file used, by file name.
    pub files: BTreeMap<String, String>,
}

impl SourceModel {
    pub fn new(name: &str, source: ModelSource) -> Self {
        Self { name: name.into(), source, files: BTreeMap::new() }
    }

    /// A local folder.
    pub fn local(name: &str, dir: impl Into<PathBuf>) -> Self {
        Self::new(name, ModelSource::Local(dir.into()))
    }

    /// A Hub repo at `revision` (None: the default branch).
    pub fn hub(name: &str, repo: &str, revision: Option<&str>) -> Self {
        Self::new(name, ModelSource::Hub { repo: repo.into(), revision: revision.map(str::to_string) })
    }

    pub fn revision(&self) -> Option<&str> {
        self.source.revision()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceRepr {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    files: BTreeMap<String, String>,
}

impl TryFrom<SourceRepr> for SourceModel {
    type Error = String;
    fn try_from(r: SourceRepr) -> Result<Self, String> {
        let source = match (r.repo, r.path) {
            (None, Some(p)) if r.revision.is_none() => ModelSource::Local(p),
            (None, Some(_)) => return Err(format!("model `{}`: a local `path` takes no `revision`", r.name)),
            (Some(repo), None) => match (&r.revision, ModelSource::hub(&repo, r.revision.as_deref())) {
                // Recipes before `path:` wrote local folders as `repo:` without a revision.
                (None, _) if Path::new(&repo).is_absolute() || Path::new(&repo).is_dir() => ModelSource::Local(repo.into()),
                (_, Some(hub)) => hub,
                (_, None) => return Err(format!("model `{}`: `{repo}` is not a Hub repo id (`owner/name`); a local folder is `path: DIR`", r.name)),
            },
            (Some(_), Some(_)) => return Err(format!("model `{}`: give `repo` (Hub) or `path` (local folder), not both", r.name)),
            (None, None) => return Err(format!("model `{}`: needs `repo: owner/name` (Hub) or `path: DIR` (local folder)", r.name)),
        };
        Ok(SourceModel { name: r.name, source, files: r.files })
    }
}

impl From<SourceModel> for SourceRepr {
    fn from(m: SourceModel) -> Self {
        let (repo, revision, path) = match m.source {
            ModelSource::Hub { repo, revision } => (Some(repo), revision, None),
            ModelSource::Local(p) => (None, None, Some(p)),
        };
        SourceRepr { name: m.name, repo, revision, path, files: m.files }
    }
}

pub use crate::merge::Merge;

/// A merge's parameters checked against the recipe it is part of (`at` names the rule).
impl Merge {
    fn validate(&self, at: &str, names: &BTreeSet<&str>, base: &str) -> Result<(), RecipeError> {
        let bad = |field: &str, message: String| RecipeError::Invalid { at: format!("{at}.merge.{field}"), message };
        let models = self.models();
        if models.is_empty() {
            return Err(bad("models", "lists no model".into()));
        }
        let mut seen = BTreeSet::new();
        for m in models {
            if !names.contains(m.as_str()) {
                return Err(bad("models", format!("`{m}` is not a model of this recipe (known: {})", join(names))));
            }
            if !seen.insert(m) {
                return Err(bad("models", format!("`{m}` is listed twice")));
            }
        }
        let finite = |field: &str, v: f64| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(bad(field, format!("must be a finite number (got {v})")))
            }
        };
        let unit = |field: &str, v: f64, open_low: bool| {
            let ok = v.is_finite() && v <= 1.0 && if open_low { v > 0.0 } else { v >= 0.0 };
            if ok {
                Ok(())
            } else {
                Err(bad(field, format!("must be in {}0, 1] (got {v})", if open_low { "(" } else { "[" })))
            }
        };
        match self {
            Merge::TaskArithmetic { models, lambda } => {
                finite("lambda", *lambda)?;
                if models.iter().any(|m| m == base) {
                    return Err(bad("models", format!("the base `{base}` is the anchor of task arithmetic and cannot be one of its models")));
                }
            }
            Merge::Linear { models, weights } => {
                if weights.len() != models.len() {
                    return Err(bad("weights", format!("has {} entries for {} models", weights.len(), models.len())));
                }
                for w in weights {
                    finite("weights", *w)?;
                }
                if weights.iter().sum::<f64>().abs() < 1e-12 {
                    return Err(bad("weights", "sum to zero".into()));
                }
            }
            Merge::Slerp { models, t } => {
                if models.len() != 2 {
                    return Err(bad("models", format!("slerp takes exactly 2 models, got {}", models.len())));
                }
                unit("t", *t, false)?;
            }
            Merge::Ties { models, lambda, density } | Merge::Dare { models, lambda, density, .. } => {
                finite("lambda", *lambda)?;
                unit("density", *density, true)?;
                if models.iter().any(|m| m == base) {
                    return Err(bad("models", format!("the base `{base}` is the anchor and cannot be one of the merged models")));
                }
            }
        }
        Ok(())
    }
}

/// Where a tensor group comes from: one model's tensors verbatim, or a merge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RuleRepr", into = "RuleRepr")]
pub enum Rule {
    Take(String),
    Merge(Merge),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    take: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    merge: Option<Merge>,
}

impl TryFrom<RuleRepr> for Rule {
    type Error = String;
    fn try_from(r: RuleRepr) -> Result<Self, String> {
        match (r.take, r.merge) {
            (Some(t), None) => Ok(Rule::Take(t)),
            (None, Some(m)) => Ok(Rule::Merge(m)),
            _ => Err("a rule needs exactly one of `take: MODEL` or `merge: {...}`".into()),
        }
    }
}

impl From<Rule> for RuleRepr {
    fn from(r: Rule) -> Self {
        match r {
            Rule::Take(t) => RuleRepr { take: Some(t), merge: None },
            Rule::Merge(m) => RuleRepr { take: None, merge: Some(m) },
        }
    }
}

impl Rule {
    /// Models the rule reads besides the base anchor.
    pub fn models(&self) -> Vec<&str> {
        match self {
            Rule::Take(m) => vec![m.as_str()],
            Rule::Merge(m) => m.models().iter().map(String::as_str).collect(),
        }
    }

    pub fn is_merge(&self) -> bool {
        matches!(self, Rule::Merge(_))
    }

    /// A short human label: `base`, `wizardlm`, `task_arithmetic(a+b, λ=0.6)`.
    pub fn label(&self) -> String {
        match self {
            Rule::Take(m) => m.clone(),
            Rule::Merge(m) => match m.strength() {
                Some(s) => format!("{}({}, {}={s})", m.method_name(), m.models().join("+"), m.info().symbol.unwrap_or("w")),
                None => format!("{}({})", m.method_name(), m.models().join("+")),
            },
        }
    }

    fn validate(&self, at: &str, names: &BTreeSet<&str>, base: &str) -> Result<(), RecipeError> {
        match self {
            Rule::Take(m) if !names.contains(m.as_str()) => Err(RecipeError::Invalid {
                at: format!("{at}.take"),
                message: format!("`{m}` is not a model of this recipe (known: {})", join(names)),
            }),
            Rule::Take(_) => Ok(()),
            Rule::Merge(m) => m.validate(at, names, base),
        }
    }
}

/// One output layer: which source layer, by which rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "LayerRepr", into = "LayerRepr")]
pub struct LayerRule {
    /// Source layer index (0-based) in the base / siblings.
    pub from: usize,
    pub rule: Rule,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LayerRepr {
    from: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    take: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    merge: Option<Merge>,
}

impl TryFrom<LayerRepr> for LayerRule {
    type Error = String;
    fn try_from(r: LayerRepr) -> Result<Self, String> {
        let rule = Rule::try_from(RuleRepr { take: r.take, merge: r.merge })?;
        Ok(LayerRule { from: r.from, rule })
    }
}

impl From<LayerRule> for LayerRepr {
    fn from(l: LayerRule) -> Self {
        let r = RuleRepr::from(l.rule);
        LayerRepr { from: l.from, take: r.take, merge: r.merge }
    }
}

/// A full description of a tailored model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Always [`FORMAT`].
    pub format: String,
    /// `model_type` of every source (one of [`crate::arch::ARCHITECTURES`]).
    pub architecture: String,
    /// Number of decoder layers in the sources.
    pub source_layers: usize,
    pub base: SourceModel,
    #[serde(default)]
    pub siblings: Vec<SourceModel>,
    /// Output layers in order; output index = position in this list.
    pub layers: Vec<LayerRule>,
    /// Where `embed_tokens` comes from.
    pub embeddings: Rule,
    /// Where the final norm and `lm_head` come from.
    pub head: Rule,
    /// Output dtype; absent = the base's storage dtype.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<Dtype>,
    /// The model whose tokenizer files and generation config the output carries; absent = the base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_source: Option<String>,
    /// The output's chat template; absent = the tokenizer source's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<ChatTemplate>,
    /// Fitted maps fused into the layer before each gap (ReplaceMe-style heal, see
    /// [`crate::heal`]); absent = no heal. The maps travel in one safetensors file beside the recipe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heal: Option<Box<Heal>>,
}

/// The full-depth model a heal fits against: the base, one sibling, or the siblings'
/// average (task arithmetic at λ = 1/n, the merge the search's warm start uses).
/// In YAML `base`, `average` or `sibling:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Teacher {
    Base,
    Sibling(String),
    Average,
}

impl std::str::FromStr for Teacher {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "base" => Ok(Teacher::Base),
            "average" => Ok(Teacher::Average),
            _ => match s.strip_prefix("sibling:") {
                Some(n) if !n.is_empty() => Ok(Teacher::Sibling(n.into())),
                _ => Err(format!("teacher `{s}` is not `base`, `average` or `sibling:NAME`")),
            },
        }
    }
}

impl TryFrom<String> for Teacher {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Teacher> for String {
    fn from(t: Teacher) -> String {
        t.to_string()
    }
}

impl std::fmt::Display for Teacher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Teacher::Base => f.write_str("base"),
            Teacher::Average => f.write_str("average"),
            Teacher::Sibling(n) => write!(f, "sibling:{n}"),
        }
    }
}

/// A recipe's heal: what was fitted, on what, and the file that holds the maps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heal {
    /// The maps file (safetensors, f32), relative to the recipe's folder.
    pub file: PathBuf,
    /// sha256 of that file; a file that does not match is refused.
    pub sha256: String,
    pub teacher: Teacher,
    /// Calibration tokens the maps were fitted on.
    pub tokens: usize,
    /// Ridge factor: α = ridge · trace(MᵀM) / d.
    pub ridge: f64,
    /// sha256 of the calibration token ids (u32 little-endian, sequence by sequence).
    pub calibration_sha256: String,
    /// One entry per healed gap, left to right.
    pub gaps: Vec<HealGap>,
    /// Source layers removed before the first kept layer: no layer precedes them, so they
    /// stay unhealed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unhealed: Vec<usize>,
}

/// One healed gap: source layers `from + 1 .. until` removed, the map fused into the
/// down_proj of output layer `layer` (source layer `from`): `W_down ← Tᵀ W_down`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealGap {
    pub layer: usize,
    pub from: usize,
    /// The source layer the teacher's hidden state enters (the source depth at the end).
    pub until: usize,
    /// The map's tensor in the maps file.
    pub map: String,
    /// sha256 of the map's f32 little-endian bytes (identifies it in the evaluator's caches).
    pub sha256: String,
}

impl Heal {
    /// A search candidate's heal before it is fitted: the teacher, the calibration token
    /// count and the ridge, with no gap, map or file yet. The evaluator fits it when it scores
    /// the candidate; nothing builds from it until it is fitted and its maps written.
    pub fn request(teacher: Teacher, tokens: usize, ridge: f64) -> Self {
        Self {
            file: PathBuf::new(),
            sha256: String::new(),
            teacher,
            tokens,
            ridge,
            calibration_sha256: String::new(),
            gaps: Vec::new(),
            unhealed: Vec::new(),
        }
    }

    /// Whether this is a [`Heal::request`] (fitted heals name their calibration tokens).
    pub fn is_request(&self) -> bool {
        self.gaps.is_empty() && self.calibration_sha256.is_empty()
    }

    /// The gap fused into output layer `index`, if any.
    pub fn gap_at(&self, index: usize) -> Option<&HealGap> {
        self.gaps.iter().find(|g| g.layer == index)
    }
}

/// Where the output's chat template comes from, resolved (never `auto`): a recipe names
/// what was chosen, so a rebuild gives the same files.
/// In YAML `{model: NAME}` or `{file: NAME, text: TEMPLATE}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ChatTemplateRepr", into = "ChatTemplateRepr")]
pub enum ChatTemplate {
    /// A source model's template (none if that model has none).
    Model(String),
    /// A template file's text, inlined so the recipe stays self-contained.
    File { name: String, text: String },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatTemplateRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

impl TryFrom<ChatTemplateRepr> for ChatTemplate {
    type Error = String;
    fn try_from(r: ChatTemplateRepr) -> Result<Self, String> {
        match (r.model, r.file, r.text) {
            (Some(m), None, None) => Ok(ChatTemplate::Model(m)),
            (None, Some(name), Some(text)) => Ok(ChatTemplate::File { name, text }),
            _ => Err("chat_template: give `model: NAME`, or `file: NAME` with `text: TEMPLATE`".into()),
        }
    }
}

impl From<ChatTemplate> for ChatTemplateRepr {
    fn from(c: ChatTemplate) -> Self {
        match c {
            ChatTemplate::Model(m) => Self { model: Some(m), file: None, text: None },
            ChatTemplate::File { name, text } => Self { model: None, file: Some(name), text: Some(text) },
        }
    }
}

/// Where embeddings and head come from when a recipe is built from layer rules alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EdgePolicy {
    /// The reference's choice: embeddings follow the first kept layer's rule, head the last's.
    #[default]
    FollowLayers,
    /// Embeddings, final norm and lm_head from the base.
    Base,
}

impl Recipe {
    /// Every source layer of model `name`, in order: one model of the family as it is (a
    /// reference row of the search, or a model folder scored alone).
    pub fn whole_model(name: &str, architecture: &str, source_layers: usize, base: SourceModel, siblings: Vec<SourceModel>) -> Self {
        let layers = (0..source_layers).map(|from| LayerRule { from, rule: Rule::Take(name.into()) }).collect();
        Self::new(architecture, source_layers, base, siblings, layers, EdgePolicy::FollowLayers)
    }

    /// A recipe from layer rules, filling embeddings/head by `policy`.
    pub fn new(
        architecture: &str,
        source_layers: usize,
        base: SourceModel,
        siblings: Vec<SourceModel>,
        layers: Vec<LayerRule>,
        policy: EdgePolicy,
    ) -> Self {
        let base_rule = Rule::Take(base.name.clone());
        let (embeddings, head) = match policy {
            EdgePolicy::Base => (base_rule.clone(), base_rule),
            EdgePolicy::FollowLayers => (
                layers.first().map(|l| l.rule.clone()).unwrap_or_else(|| base_rule.clone()),
                layers.last().map(|l| l.rule.clone()).unwrap_or(base_rule),
            ),
        };
        Self {
            format: FORMAT.into(),
            architecture: architecture.into(),
            source_layers,
            base,
            siblings,
            layers,
            embeddings,
            head,
            dtype: None,
            tokenizer_source: None,
            chat_template: None,
            heal: None,
        }
    }

    /// All source models, base first.
    pub fn models(&self) -> impl Iterator<Item = &SourceModel> {
        std::iter::once(&self.base).chain(self.siblings.iter())
    }

    pub fn model(&self, name: &str) -> Option<&SourceModel> {
        self.models().find(|m| m.name == name)
    }

    /// The name of the model whose tokenizer files the output carries.
    pub fn tokenizer_model(&self) -> &str {
        self.tokenizer_source.as_deref().unwrap_or(&self.base.name)
    }

    /// The recipe as published files show it (the model card, the written model's
    /// `tailor.yaml`): local source folders named by their last component (a path says
    /// nothing to a reader and would leak the machine's layout), Hub sources unchanged,
    /// every file hash kept.
    pub fn published(&self) -> Recipe {
        let mut shown = self.clone();
        for m in std::iter::once(&mut shown.base).chain(shown.siblings.iter_mut()) {
            if let ModelSource::Local(_) = m.source {
                m.source = ModelSource::Local(m.source.public_name().into());
            }
        }
        if let Some(h) = &mut shown.heal {
            if let Some(name) = h.file.file_name() {
                h.file = name.into();
            }
        }
        shown
    }

    /// Source layer indices that no output layer uses.
    pub fn removed_layers(&self) -> Vec<usize> {
        let used: BTreeSet<usize> = self.layers.iter().map(|l| l.from).collect();
        (0..self.source_layers).filter(|i| !used.contains(i)).collect()
    }

    /// The merge methods the recipe's rules use, each once, in registry order.
    pub fn merge_methods(&self) -> Vec<&'static crate::merge::MethodInfo> {
        let used: Vec<crate::merge::Method> = self
            .layers
            .iter()
            .map(|l| &l.rule)
            .chain([&self.embeddings, &self.head])
            .filter_map(|r| match r {
                Rule::Merge(m) => Some(m.method()),
                Rule::Take(_) => None,
            })
            .collect();
        crate::merge::METHODS.iter().filter(|m| used.contains(&m.method)).collect()
    }

    pub fn merge_count(&self) -> usize {
        self.layers.iter().filter(|l| l.rule.is_merge()).count()
    }

    /// Check internal consistency, naming the offending entry.
    pub fn validate(&self) -> Result<(), RecipeError> {
        let inv = |at: &str, message: String| RecipeError::Invalid { at: at.into(), message };
        if self.format != FORMAT {
            return Err(inv("format", format!("`{}` is not supported (expected `{FORMAT}`)", self.format)));
        }
        if crate::arch::Arch::for_model_type(&self.architecture).is_none() {
            return Err(inv("architecture", format!("`{}` is not supported ({})", self.architecture, crate::arch::supported_list())));
        }
        if self.source_layers == 0 || self.source_layers > crate::limits::MAX_LAYERS {
            return Err(inv(
                "source_layers",
                format!("{} is not between 1 and {} (the most layers hf-tailor accepts)", self.source_layers, crate::limits::MAX_LAYERS),
            ));
        }
        if self.layers.len() > crate::limits::MAX_LAYERS {
            return Err(inv(
                "layers",
                format!("has {} entries, more than the {} layers hf-tailor accepts", self.layers.len(), crate::limits::MAX_LAYERS),
            ));
        }
        let mut names = BTreeSet::new();
        for (i, m) in self.models().enumerate() {
            let at = if i == 0 { "base".to_string() } else { format!("siblings[{}]", i - 1) };
            if m.name.is_empty() || m.name.contains(char::is_whitespace) {
                return Err(inv(&format!("{at}.name"), format!("`{}` must be a non-empty word", m.name)));
            }
            if !names.insert(m.name.as_str()) {
                return Err(inv(&format!("{at}.name"), format!("`{}` is used by two models", m.name)));
            }
        }
        if self.layers.is_empty() {
            return Err(inv("layers", "keeps no layer".into()));
        }
        for (i, l) in self.layers.iter().enumerate() {
            let at = format!("layers[{i}]");
            if l.from >= self.source_layers {
                return Err(inv(
                    &format!("{at}.from"),
                    format!("layer {} is out of range: the sources have {} layers (0..{})", l.from, self.source_layers, self.source_layers - 1),
                ));
            }
            l.rule.validate(&at, &names, &self.base.name)?;
        }
        self.embeddings.validate("embeddings", &names, &self.base.name)?;
        if let Some(t) = &self.tokenizer_source {
            if !names.contains(t.as_str()) {
                return Err(inv("tokenizer_source", format!("`{t}` is not a model of this recipe (known: {})", join(&names))));
            }
        }
        if let Some(ChatTemplate::Model(t)) = &self.chat_template {
            if !names.contains(t.as_str()) {
                return Err(inv("chat_template.model", format!("`{t}` is not a model of this recipe (known: {})", join(&names))));
            }
        }
        self.head.validate("head", &names, &self.base.name)?;
        if let Some(h) = &self.heal {
            self.validate_heal(h, &names)?;
        }
        Ok(())
    }

    /// A heal names real gaps: each entry's layer is the last kept layer before removed
    /// layers, `until` the next kept source layer (or the source depth), in order.
    fn validate_heal(&self, h: &Heal, names: &BTreeSet<&str>) -> Result<(), RecipeError> {
        let inv = |at: String, message: String| RecipeError::Invalid { at, message };
        match &h.teacher {
            Teacher::Sibling(n) if !self.siblings.iter().any(|s| &s.name == n) => {
                return Err(inv("heal.teacher".into(), format!("`{n}` is not a sibling of this recipe (known: {})", join(names))));
            }
            Teacher::Average if self.siblings.is_empty() => return Err(inv("heal.teacher".into(), "`average` needs at least one sibling".into())),
            _ => {}
        }
        if !(h.ridge.is_finite() && h.ridge >= 0.0) {
            return Err(inv("heal.ridge".into(), format!("must be a finite number >= 0 (got {})", h.ridge)));
        }
        let mut last = None;
        for (i, g) in h.gaps.iter().enumerate() {
            let at = format!("heal.gaps[{i}]");
            let Some(l) = self.layers.get(g.layer) else {
                return Err(inv(format!("{at}.layer"), format!("output layer {} does not exist (the recipe keeps {})", g.layer, self.layers.len())));
            };
            let next = self.layers.get(g.layer + 1).map(|n| n.from).unwrap_or(self.source_layers);
            if l.from != g.from || g.until != next || next <= g.from + 1 {
                return Err(inv(at, format!("layer {} (source {}) is not followed by a gap ending at source layer {}", g.layer, g.from, g.until)));
            }
            if last.is_some_and(|p| p >= g.layer) {
                return Err(inv(format!("{at}.layer"), "gaps must be listed left to right, once each".into()));
            }
            last = Some(g.layer);
        }
        Ok(())
    }

    /// Parse YAML (JSON is YAML too) and validate.
    pub fn from_yaml_str(text: &str, path: &str) -> Result<Self, RecipeError> {
        if let Some(why) = crate::limits::yaml_problem(text) {
            return Err(RecipeError::Parse { path: path.into(), message: why });
        }
        let r: Recipe = serde_norway::from_str(text).map_err(|e| RecipeError::Parse { path: path.into(), message: e.to_string() })?;
        r.validate()?;
        Ok(r)
    }

    /// Read a recipe file (`.yaml`, `.yml` or `.json`) and validate it. Relative local
    /// folders are relative to the recipe's own folder (as written beside it by `search`).
    pub fn load(path: &Path) -> Result<Self, RecipeError> {
        let p = path.display().to_string();
        let text = crate::fsutil::read_text_input(path, crate::limits::MAX_CONFIG_BYTES as u64)
            .map_err(|source| RecipeError::Io { path: p.clone(), source })?;
        let mut recipe = Self::from_yaml_str(&text, &p)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for m in std::iter::once(&mut recipe.base).chain(recipe.siblings.iter_mut()) {
            if let ModelSource::Local(local) = &mut m.source {
                if local.is_relative() && !local.is_dir() && dir.join(&*local).is_dir() {
                    *local = dir.join(&*local);
                }
            }
        }
        if let Some(h) = &mut recipe.heal {
            if h.file.is_relative() {
                h.file = dir.join(&h.file);
            }
            check_heal_file(h, &p)?;
        }
        Ok(recipe)
    }

    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(self).expect("a recipe always serialises")
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a recipe always serialises")
    }

    /// Write as YAML or JSON by extension, atomically (temp file + rename).
    /// A heal's maps file in the recipe's own folder is written by its name alone, so the
    /// folder can move.
    pub fn save(&self, path: &Path) -> Result<(), RecipeError> {
        let mut shown = std::borrow::Cow::Borrowed(self);
        if let Some(h) = &self.heal {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let same = |a: &Path, b: &Path| a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
            if let (Some(parent), Some(name)) = (h.file.parent(), h.file.file_name()) {
                if !parent.as_os_str().is_empty() && same(parent, dir) {
                    shown.to_mut().heal.as_mut().expect("healed").file = name.into();
                }
            }
        }
        let text = if path.extension().is_some_and(|e| e == "json") { shown.to_json() } else { shown.to_yaml() };
        crate::fsutil::write_atomic(path, text.as_bytes()).map_err(|source| RecipeError::Io { path: path.display().to_string(), source })
    }
}

/// The heal's maps file exists and its sha256 is the one the recipe names.
pub fn check_heal_file(h: &Heal, recipe: &str) -> Result<(), RecipeError> {
    if h.is_request() {
        return Err(RecipeError::Heal {
            recipe: recipe.into(),
            message: "it asks for a heal that was never fitted (a search candidate's); fit it with `hf-tailor heal`".into(),
        });
    }
    let path = h.file.display().to_string();
    let found = crate::fsutil::sha256_file(&h.file)
        .map_err(|e| RecipeError::Heal { recipe: recipe.into(), message: format!("cannot read its maps file {path}: {e}") })?;
    if found != h.sha256 {
        return Err(RecipeError::Heal {
            recipe: recipe.into(),
            message: format!("its maps file {path} has sha256 {found}, but the recipe names {} (a changed or foreign file)", h.sha256),
        });
    }
    Ok(())
}

fn join(names: &BTreeSet<&str>) -> String {
    names.iter().copied().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(name: &str) -> SourceModel {
        SourceModel::hub(name, &format!("org/{name}"), None)
    }

    fn sample() -> Recipe {
        Recipe::new(
            "llama",
            4,
            src("base"),
            vec![src("a"), src("b")],
            vec![
                LayerRule { from: 0, rule: Rule::Take("base".into()) },
                LayerRule { from: 1, rule: Rule::Take("a".into()) },
                LayerRule { from: 3, rule: Rule::Merge(Merge::TaskArithmetic { models: vec!["a".into(), "b".into()], lambda: 0.6 }) },
            ],
            EdgePolicy::FollowLayers,
        )
    }

    #[test]
    fn yaml_round_trip_is_readable_and_exact() {
        let r = sample();
        let y = r.to_yaml();
        assert!(y.contains("take: a"), "{y}");
        assert!(y.contains("method: task_arithmetic"), "{y}");
        assert_eq!(Recipe::from_yaml_str(&y, "t").unwrap(), r);
        assert_eq!(Recipe::from_yaml_str(&r.to_json(), "t").unwrap(), r);
        assert_eq!(r.removed_layers(), vec![2]);
    }

    #[test]
    fn errors_point_at_the_offending_entry() {
        let mut r = sample();
        r.layers[1].from = 9;
        assert!(r.validate().unwrap_err().to_string().contains("layers[1].from"));
        let mut r = sample();
        r.layers[2].rule = Rule::Merge(Merge::TaskArithmetic { models: vec!["a".into()], lambda: f64::NAN });
        assert!(r.validate().unwrap_err().to_string().contains("layers[2].merge.lambda"));
        let mut r = sample();
        r.layers[0].rule = Rule::Take("zzz".into());
        assert!(r.validate().unwrap_err().to_string().contains("layers[0].take"));
        let y = sample().to_yaml().replace("lambda: 0.6", "lamda: 0.6");
        assert!(Recipe::from_yaml_str(&y, "t").is_err());
    }
}
