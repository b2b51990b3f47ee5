//! The whole tailoring job as one sequence of stages: pull → compatibility check → search →
//! build → verify → model card → push. Each stage is a library call owned by its module;
//! this module only orders them, decides where each stage's files go, and reports progress,
//! so that the root command, `hf-tailor demo` and the GitHub Action run the same code.

pub mod plan;

pub use plan::{Device, ModelFiles, Plan};
