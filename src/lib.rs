//! hf-tailor: make a smaller LLM from a base model and its fine-tuned siblings by cutting
//! and stitching whole transformer layers (GPTailor), then publish it on the Hub.
//!
//! The pipeline: `hub` pulls models, `checkpoint` opens and validates them, `search`
//! proposes [`recipe::Recipe`]s scored in memory by `eval`, `writer` writes the winner,
//! `card` renders its model card and `hub` pushes it. The recipe is the one data type
//! that flows between the stages; [`layout`] turns it into the output's tensors for both
//! the evaluator and the writer, and [`source`] is what a model reference is.

pub mod arch;
pub mod card;
pub mod checkpoint;
pub mod config;
pub mod dtype;
pub mod eval;
pub mod fsutil;
pub mod gguf;
pub mod heal;
pub mod hf_home;
pub mod hub;
pub mod human;
pub mod layout;
pub mod limits;
pub mod merge;
pub mod mergekit;
pub mod pipeline;
pub mod plot;
pub mod recipe;
pub mod score;
pub mod search;
pub mod source;
pub mod stitch;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod writer;
