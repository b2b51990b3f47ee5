//! Test support: tiny real checkpoints, a scorer with a closed-form optimum, a tiny family
//! whose optimum is known by construction. Used by the tests, benchmarks and examples;
//! behind the `testkit` cargo feature, so it is not part of the library's public API
//! (the crate's dev-dependency on itself turns the feature on for every test target).

pub mod fixture;
pub mod identity_family;
pub mod synthetic;

use crate::recipe::{EdgePolicy, SourceModel};
use crate::search::RecipeTemplate;

/// A llama template of `layers` layers with base `base` and siblings `s0`, `s1`, … (Hub ids
/// that are never fetched), for tests that need a search space but no checkpoint.
pub fn template(layers: usize, siblings: usize) -> RecipeTemplate {
    let src = |n: &str| SourceModel::hub(n, &format!("org/{n}"), None);
    RecipeTemplate {
        architecture: "llama".into(),
        source_layers: layers,
        base: src("base"),
        siblings: (0..siblings).map(|j| src(&format!("s{j}"))).collect(),
        edges: EdgePolicy::FollowLayers,
        dtype: None,
    }
}
