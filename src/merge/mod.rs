//! Merge methods: the one registry of what a method is called, what it takes, where it can
//! run and whether the search may choose it ([`METHODS`]), and each method's arithmetic,
//! written once ([`methods`]) over the few tensor steps a backend provides ([`TensorOps`]):
//! the host's ([`host`], the writer's) and the evaluator's device (`eval::device_merge`).
//!
//! Adding a method: a variant of [`Merge`] and of [`Method`], an entry in [`METHODS`],
//! and its arithmetic in [`methods`] (or in [`host`] when it runs on the host only).

mod host;
pub mod methods;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use host::{apply, dare_keep_mask, linear, slerp, Host};
pub use methods::{dare_scale, ties_keep_count, TensorOps};

/// A merge method, as recipes, journals and `--merge-methods` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    TaskArithmetic,
    Linear,
    Slerp,
    Ties,
    Dare,
}

/// The facts about one merge method that recipe validation, stitching, the writer, the
/// evaluator, the search space, mergekit export and the model card read: kept beside the
/// implementation so that adding a method means one entry here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodInfo {
    pub method: Method,
    /// The name in recipes (`method: ties`).
    pub name: &'static str,
    /// Other names the command line accepts (`--merge-methods ta`).
    pub aliases: &'static [&'static str],
    /// The name mergekit's `merge_method` uses.
    pub mergekit_name: &'static str,
    /// What the card calls it ("task arithmetic", "TIES", …).
    pub title: &'static str,
    /// Parameters as written in recipes, the headline one first.
    pub parameters: &'static [&'static str],
    /// The symbol tables and pictures show for the headline parameter, if it has one.
    pub symbol: Option<&'static str>,
    /// Every output element depends only on the same element of the inputs (so tensors
    /// can be merged chunk by chunk); TIES' magnitude trim and SLERP's norms are global.
    pub elementwise: bool,
    /// Reads the base only as the anchor of task vectors (`W_j − base`); linear and SLERP
    /// treat the base like any other model (it may be listed among the models).
    pub anchors_on_base: bool,
    /// The search may choose it for a layer that combines several siblings: its only free
    /// parameter is a strength λ in [0, 1] (density and seed are fixed per search).
    pub searchable: bool,
    /// Written over [`TensorOps`], so the evaluator computes it where its tensors live;
    /// the others are merged on the host and uploaded.
    pub on_device: bool,
}

/// Every merge method, in the order the docs list them.
pub static METHODS: &[MethodInfo] = &[
    MethodInfo {
        method: Method::TaskArithmetic,
        name: "task_arithmetic",
        aliases: &["ta"],
        mergekit_name: "task_arithmetic",
        title: "task arithmetic",
        parameters: &["lambda"],
        symbol: Some("λ"),
        elementwise: true,
        anchors_on_base: true,
        searchable: true,
        on_device: true,
    },
    MethodInfo {
        method: Method::Linear,
        name: "linear",
        aliases: &[],
        mergekit_name: "linear",
        title: "linear",
        parameters: &["weights"],
        symbol: None,
        elementwise: true,
        anchors_on_base: false,
        searchable: false,
        on_device: false,
    },
    MethodInfo {
        method: Method::Slerp,
        name: "slerp",
        aliases: &[],
        mergekit_name: "slerp",
        title: "SLERP",
        parameters: &["t"],
        symbol: Some("t"),
        elementwise: false,
        anchors_on_base: false,
        searchable: false,
        on_device: false,
    },
    MethodInfo {
        method: Method::Ties,
        name: "ties",
        aliases: &[],
        mergekit_name: "ties",
        title: "TIES",
        parameters: &["lambda", "density"],
        symbol: Some("λ"),
        elementwise: false,
        anchors_on_base: true,
        searchable: true,
        on_device: true,
    },
    MethodInfo {
        method: Method::Dare,
        name: "dare",
        aliases: &[],
        mergekit_name: "dare_linear",
        title: "DARE",
        parameters: &["lambda", "density", "seed"],
        symbol: Some("λ"),
        elementwise: false,
        anchors_on_base: true,
        searchable: true,
        on_device: true,
    },
];

/// How several models' tensors are combined. Every method anchors on the base where it
/// needs one and is computed in f32. Its variants are the registry's [`Method`]s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum Merge {
    /// `base + lambda * sum_j (W_j - base)` (the GPTailor merge).
    TaskArithmetic { models: Vec<String>, lambda: f64 },
    /// `sum_j w_j W_j / sum_j w_j`; the base may be listed by name.
    Linear { models: Vec<String>, weights: Vec<f64> },
    /// Spherical interpolation between exactly two models at `t` (0 = first, 1 = second).
    Slerp { models: Vec<String>, t: f64 },
    /// TIES: trim each task vector to its top `density` magnitudes, elect signs, disjoint mean, scale by `lambda`.
    Ties { models: Vec<String>, lambda: f64, density: f64 },
    /// DARE: drop task-vector entries with probability `1 - density`, rescale, sum, scale by `lambda`.
    Dare { models: Vec<String>, lambda: f64, density: f64, seed: u64 },
}

impl Merge {
    pub fn models(&self) -> &[String] {
        match self {
            Merge::TaskArithmetic { models, .. }
            | Merge::Linear { models, .. }
            | Merge::Slerp { models, .. }
            | Merge::Ties { models, .. }
            | Merge::Dare { models, .. } => models,
        }
    }

    /// The method, the key of its registry entry.
    pub fn method(&self) -> Method {
        match self {
            Merge::TaskArithmetic { .. } => Method::TaskArithmetic,
            Merge::Linear { .. } => Method::Linear,
            Merge::Slerp { .. } => Method::Slerp,
            Merge::Ties { .. } => Method::Ties,
            Merge::Dare { .. } => Method::Dare,
        }
    }

    /// The method's facts ([`METHODS`]).
    pub fn info(&self) -> &'static MethodInfo {
        self.method().info()
    }

    /// The method's name as written in YAML.
    pub fn method_name(&self) -> &'static str {
        self.info().name
    }

    /// The main scalar parameter (λ, t, …) for tables and pictures.
    pub fn strength(&self) -> Option<f64> {
        match self {
            Merge::TaskArithmetic { lambda, .. } | Merge::Ties { lambda, .. } | Merge::Dare { lambda, .. } => Some(*lambda),
            Merge::Slerp { t, .. } => Some(*t),
            Merge::Linear { .. } => None,
        }
    }
}

/// The registry entry of a method name, if known.
pub fn method(name: &str) -> Option<&'static MethodInfo> {
    METHODS.iter().find(|m| m.name == name)
}

/// `task_arithmetic, linear, slerp, ties, dare`, for messages.
pub fn method_list() -> String {
    list(|_| true)
}

/// `task_arithmetic, ties, dare`: the methods a search may choose, for messages.
pub fn searchable_list() -> String {
    list(|m| m.searchable)
}

fn list(keep: impl Fn(&MethodInfo) -> bool) -> String {
    METHODS.iter().filter(|m| keep(m)).map(|m| m.name).collect::<Vec<_>>().join(", ")
}

impl Method {
    /// The method's registry entry.
    pub fn info(self) -> &'static MethodInfo {
        METHODS.iter().find(|m| m.method == self).expect("every Method has a registry entry")
    }

    /// A method the search may choose, by name or alias (`--merge-methods`).
    pub fn parse_searchable(s: &str) -> Result<Self, UnknownMethod> {
        let m: Method = s.parse().map_err(|_| UnknownMethod { name: s.into(), known: searchable_list() })?;
        if !m.info().searchable {
            return Err(UnknownMethod { name: s.into(), known: searchable_list() });
        }
        Ok(m)
    }

    /// The merge of `models` at strength `lambda` with a search's fixed `density` and
    /// `seed`; `None` for a method the search cannot set (see [`MethodInfo::searchable`]).
    pub fn searched(self, models: Vec<String>, lambda: f64, density: f64, seed: u64) -> Option<Merge> {
        match self {
            Method::TaskArithmetic => Some(Merge::TaskArithmetic { models, lambda }),
            Method::Ties => Some(Merge::Ties { models, lambda, density }),
            Method::Dare => Some(Merge::Dare { models, lambda, density, seed }),
            Method::Linear | Method::Slerp => None,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.info().name)
    }
}

/// A method name the registry does not know (or, for the search, one it cannot choose).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown merge method `{name}` ({known})")]
pub struct UnknownMethod {
    pub name: String,
    pub known: String,
}

impl FromStr for Method {
    type Err = UnknownMethod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        METHODS
            .iter()
            .find(|m| m.name == s || m.aliases.contains(&s))
            .map(|m| m.method)
            .ok_or_else(|| UnknownMethod { name: s.into(), known: method_list() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_has_one_entry_and_parses_back() {
        for (i, m) in METHODS.iter().enumerate() {
            assert_eq!(METHODS.iter().position(|n| n.method == m.method), Some(i), "{} listed twice", m.name);
            assert_eq!(m.method.info(), m);
            assert_eq!(m.name.parse::<Method>().unwrap(), m.method);
            assert_eq!(serde_json::to_string(&m.method).unwrap(), format!("\"{}\"", m.name));
            for a in m.aliases {
                assert_eq!(a.parse::<Method>().unwrap(), m.method);
            }
        }
    }

    #[test]
    fn the_search_parses_its_methods_only() {
        assert_eq!(Method::parse_searchable(" ta ").unwrap(), Method::TaskArithmetic);
        assert_eq!(Method::parse_searchable("dare").unwrap(), Method::Dare);
        let e = Method::parse_searchable("linear").unwrap_err().to_string();
        assert_eq!(e, "unknown merge method `linear` (task_arithmetic, ties, dare)");
        assert!(Method::parse_searchable("nope").is_err());
        for m in METHODS {
            assert_eq!(m.method.searched(vec!["a".into(), "b".into()], 0.5, 0.5, 0).is_some(), m.searchable, "{}", m.name);
        }
    }
}
